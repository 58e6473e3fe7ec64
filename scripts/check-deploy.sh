#!/usr/bin/env bash
# The operations kit against real tools: `promtool check rules` on the alert rules, and
# `promtool check metrics` on a live /metrics scrape of `hipinfer serve` after a request.
# Needs promtool (Debian: apt-get install prometheus) and the hipinfer binary (built here).
set -euo pipefail
cd "$(dirname "$0")/.."

promtool check rules deploy/prometheus/hipinfer-alerts.yml
python3 -c 'import json,sys; json.load(open("deploy/grafana/hipinfer-dashboard.json"))'

model="${HIPINFER_MODEL:-models/all-MiniLM-L6-v2}"
if [ ! -f "$model/model.safetensors" ]; then
    echo "note: $model is missing (scripts/fetch-model.sh), so the live /metrics check was skipped"
    exit 0
fi
. scripts/client-lib.sh
bin="$(hipinfer_bin)"
# As the Kubernetes example runs it: the backend in a supervised worker process.
start_server "$bin" "$model" --isolation subprocess
python3 - "$address" <<'PY'
import json, sys, urllib.request
base = "http://" + sys.argv[1]
request = urllib.request.Request(base + "/embed", data=json.dumps({"inputs": "hello"}).encode(),
                                 headers={"Content-Type": "application/json"})
assert len(json.load(urllib.request.urlopen(request))[0]) == 384
assert urllib.request.urlopen(base + "/health").status == 200
open("/tmp/hipinfer-metrics.txt", "wb").write(urllib.request.urlopen(base + "/metrics").read())
PY
promtool check metrics < /tmp/hipinfer-metrics.txt
echo "metrics: $(grep -c '^hipinfer_' /tmp/hipinfer-metrics.txt) series pass promtool check metrics"
stop_server
echo "hipinfer serve stopped cleanly on SIGTERM"
