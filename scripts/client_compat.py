"""The client checks of scripts/client-compat.sh: each client call's answer against the
library's own (`hipinfer embed`). Prints one line per check and exits 1 on any difference."""

import json
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import openai
from huggingface_hub import InferenceClient

address, binary, model = sys.argv[1:4]
base = f"http://{address}"
failures = []


def check(name, ok, detail=""):
    print(("ok    " if ok else "FAIL  ") + name + (f": {detail}" if detail and not ok else ""))
    if not ok:
        failures.append(name)


def library(texts, normalize=True):
    """The library's own answer, from `hipinfer embed`."""
    args = [binary, "embed", "--backend", "cpu", "--model", model]
    if not normalize:
        args.append("--no-normalize")
    output = subprocess.run(args + list(texts), check=True, capture_output=True, text=True)
    return np.array(json.loads(output.stdout)["embeddings"], dtype=np.float32)


def post(path, body):
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def close(a, b, tolerance=1e-6):
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    return a.shape == b.shape and float(np.max(np.abs(a - b))) <= tolerance


texts = ["The cat sits on the mat.", "GPUs fail in many interesting ways.", "Grüße aus München 🦀"]
expected = library(texts)
served = json.load(urllib.request.urlopen(base + "/info"))["model_id"]

# OpenAI's client.
client = openai.OpenAI(base_url=base + "/v1", api_key="unused")
answer = client.embeddings.create(input=texts, model=served)  # base64 on the wire by default
check("openai embeddings.create (default encoding)",
      close([d.embedding for d in answer.data], expected))
answer = client.embeddings.create(input=texts, model=served, encoding_format="float")
check("openai embeddings.create (float)", close([d.embedding for d in answer.data], expected))
check("openai usage", answer.usage.prompt_tokens > 0 and answer.usage.total_tokens == answer.usage.prompt_tokens)
answer = client.embeddings.create(input=texts[0], model=served, dimensions=384)
check("openai embeddings.create (dimensions=384)", close(answer.data[0].embedding, expected[0]))
try:
    client.embeddings.create(input=texts[0], model=served, dimensions=100)
    check("openai dimensions=100 refused", False, "accepted")
except openai.UnprocessableEntityError as error:
    check("openai dimensions=100 refused in OpenAI's schema",
          error.body.get("type") == "invalid_request_error" and "dimensions" in error.body.get("message", ""),
          str(error.body))
models = client.models.list()
check("openai models.list", [m.id for m in models.data] == [served], str(models))
card = client.models.retrieve(served)
check("openai models.retrieve", card.id == served and card.owned_by == "hipinfer", str(card))
try:
    client.models.retrieve("gpt-4")
    check("openai models.retrieve of another model is 404", False, "found")
except openai.NotFoundError as error:
    check("openai models.retrieve of another model is 404", error.body.get("code") == "model_not_found",
          str(error.body))

# Hugging Face's InferenceClient, pointed at the server as at a TEI endpoint.
hf = InferenceClient(base_url=base)
one = hf.feature_extraction(texts[0])
check("InferenceClient.feature_extraction (one text)", close(np.asarray(one).reshape(-1), expected[0]),
      str(np.asarray(one).shape))
many = hf.feature_extraction(texts)
check("InferenceClient.feature_extraction (a list)", close(np.asarray(many), expected), str(np.asarray(many).shape))
scores = hf.sentence_similarity(texts[0], other_sentences=texts[1:])
cosines = [float(np.dot(expected[0], e)) for e in expected[1:]]
check("InferenceClient.sentence_similarity", close(scores, cosines, 1e-5), f"{scores} vs {cosines}")

# TEI's other routes over plain HTTP.
status, body = post("/similarity", {"inputs": {"source_sentence": texts[0], "sentences": texts[1:]}})
check("POST /similarity", status == 200 and close(body, cosines, 1e-5), f"{status} {body}")
status, body = post("/embed_all", {"inputs": texts[:1]})
raw = library(texts[:1], normalize=False)
check("POST /embed_all (the mean of its tokens is the embedding)",
      status == 200 and close(np.asarray(body[0]).mean(axis=0), raw[0], 1e-5), str(status))
status, tokens = post("/tokenize", {"inputs": "hello world"})
ids = [t["id"] for t in tokens[0]]
status, body = post("/decode", {"ids": ids})
check("POST /decode", status == 200 and body == ["hello world"], f"{status} {body}")

# Errors keep their schemas.
status, body = post("/embed", {"inputs": 5})
check("TEI route error schema", status == 422 and set(body) == {"error", "error_type"}, f"{status} {body}")
status, body = post("/v1/embeddings", {"input": 5})
check("OpenAI route error schema",
      status == 422 and set(body) == {"error"} and {"message", "type", "code"} <= set(body["error"]),
      f"{status} {body}")

if failures:
    print(f"{len(failures)} client check(s) failed: {', '.join(failures)}")
    sys.exit(1)
print("every client check passed")
