#!/usr/bin/env python3
"""Probes `hipinfer serve` as an attacker and a careless client would, and prints what the
server did: the attacks of the issue "The server under abuse", rerun.

    python3 scripts/server-abuse.py [--bin target/release/hipinfer] [--model DIR] [--only NAME ...]

Each probe starts a fresh server (CPU backend, an API key, default limits unless the probe
says otherwise) on 127.0.0.1 and prints one JSON line; the last line is a summary. Only the
standard library is used.
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

KEY = "abuse-key"


def rss_kb(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


SERVERS = []


class Server:
    def __init__(self, args, extra=()):
        self.process = subprocess.Popen(
            [args.bin, "serve", "--backend", "cpu", "--model", args.model, "--host", "127.0.0.1",
             "--port", "0", "--api-key", KEY, *extra],
            stderr=subprocess.PIPE, text=True)
        while True:
            line = self.process.stderr.readline()
            if not line:
                raise SystemExit("hipinfer serve exited early")
            if "http://" in line:
                self.address = line.split("http://")[1].strip()
                break
        SERVERS.append(self)
        threading.Thread(target=self._drain, daemon=True).start()
        self.host, port = self.address.rsplit(":", 1)
        self.port = int(port)

    def _drain(self):
        for _ in self.process.stderr:
            pass

    def url(self, path):
        return f"http://{self.address}{path}"

    def request(self, path, body=None, timeout=120):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url(path), data=data, headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
        started = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                payload = response.read()
                return response.status, time.monotonic() - started, payload
        except urllib.error.HTTPError as error:
            return error.code, time.monotonic() - started, error.read()
        except OSError as error:
            return f"error: {error}", time.monotonic() - started, b""

    def metric(self, name):
        _, _, text = self.request("/metrics")
        total = 0.0
        for line in text.decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def connect(self):
        return socket.create_connection((self.host, self.port), timeout=60)


def text_of(words):
    return ("The quick brown fox jumps over the lazy dog. " * (words // 9 + 1))


def closed_after(sock, limit, since=None):
    """Seconds from `since` (default now) until the peer closed `sock` (None if still open
    after `limit`)."""
    started = time.monotonic() if since is None else since
    sock.settimeout(limit)
    try:
        while True:
            if not sock.recv(4096):
                return round(time.monotonic() - started, 2)
    except socket.timeout:
        return None
    except OSError:
        return round(time.monotonic() - started, 2)


def probe_idle_flood(args):
    """Thousands of idle connections (no API key needed): do /health and /embed still answer?"""
    server = Server(args)
    socks, failed = [], 0
    for _ in range(args.flood):
        try:
            socks.append(server.connect())
        except OSError:
            failed += 1
    health = server.request("/health", timeout=30)
    embed = server.request("/embed", {"inputs": "hello world"}, timeout=30)
    open_now = server.metric("hipinfer_connections_open")
    evicted = server.metric("hipinfer_connections_evicted_total")
    refused = server.metric("hipinfer_connections_refused_total")
    time.sleep(11)  # past the header timeout (10 s)
    still_open = 0
    for sock in socks:
        sock.setblocking(False)
        try:
            if sock.recv(1) != b"":
                still_open += 1
        except BlockingIOError:
            still_open += 1
        except OSError:
            pass
        sock.close()
    timeouts = server.metric("hipinfer_connection_timeouts_total")
    server.stop()
    return {"connections": args.flood, "connect_failed": failed, "health": health[0],
            "health_seconds": round(health[1], 3), "embed": embed[0],
            "embed_seconds": round(embed[1], 3), "open_gauge": open_now, "evicted": evicted,
            "refused": refused, "still_open_after_11s": still_open, "timeouts": timeouts}


def probe_half_requests(args):
    """Half a request line; headers without their end; a body that stops short."""
    server = Server(args, ["--body-timeout", "5s"])
    sent = time.monotonic()
    half_line = server.connect()
    half_line.sendall(b"GET /health HT")
    no_end = server.connect()
    no_end.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    short_body = server.connect()
    short_body.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode()
                       + b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"in")
    short_body.settimeout(60)
    answer = short_body.recv(4096).decode(errors="replace")
    result = {
        "short_body_answer": answer.split("\r\n", 1)[0],
        "short_body_answered_after_s": round(time.monotonic() - sent, 2),
        "half_request_line_closed_after_s": closed_after(half_line, 60, sent),
        "unfinished_headers_closed_after_s": closed_after(no_end, 60, sent),
    }
    server.stop()
    return result


def probe_tokenization_memory(args):
    """12 concurrent requests, each one 1.9 MB string: the server's peak memory."""
    server = Server(args)
    before = rss_kb(server.process.pid)
    text = text_of(1_900_000 // 5)[:1_900_000]
    results = []

    def one():
        results.append(server.request("/embed", {"inputs": text}, timeout=300)[0])

    threads = [threading.Thread(target=one) for _ in range(12)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    peak = rss_kb(server.process.pid, "VmHWM")
    server.stop()
    return {"requests": 12, "input_bytes": len(text), "statuses": sorted(set(results)),
            "rss_before_mb": before // 1024, "peak_rss_mb": peak // 1024}


def probe_dropped_clients(args):
    """60 batch-32 requests whose sockets close 10 ms after sending, then one normal request."""
    server = Server(args)
    body = json.dumps({"inputs": [text_of(200)[:900]] * 32}).encode()
    head = (f"POST /embed HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    for _ in range(60):
        sock = server.connect()
        sock.sendall(head + body)
        time.sleep(0.01)
        sock.close()
    status, seconds, _ = server.request("/embed", {"inputs": "hello world"})
    time.sleep(5)  # a step already running when its client left finishes, and is discarded
    dropped = server.metric('hipinfer_request_failure_total{reason="dropped"}')
    successes = server.metric("hipinfer_request_success_total")
    server.stop()
    return {"dropped_requests_sent": 60, "next_embed": status, "next_embed_seconds": round(seconds, 2),
            "counted_dropped": dropped, "counted_successes": successes}


def probe_sigterm_drain(args):
    """300 batch-32 requests queued, then SIGTERM: how long to exit, and what was answered."""
    server = Server(args)
    body = {"inputs": [text_of(100)[:500]] * 32}
    statuses = []

    def one():
        statuses.append(server.request("/embed", body, timeout=600)[0])

    threads = [threading.Thread(target=one) for _ in range(300)]
    [t.start() for t in threads]
    time.sleep(3)
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    code = server.process.wait(timeout=600)
    exited = time.monotonic() - started
    [t.join() for t in threads]
    counts = {}
    for s in statuses:
        counts[str(s)] = counts.get(str(s), 0) + 1
    return {"requests": 300, "exit_code": code, "exit_seconds_after_sigterm": round(exited, 1),
            "answers": counts}


def probe_tokenize(args):
    """/tokenize abuse: 4 loops of 1.9 MB inputs (health latency meanwhile), a 2 MB body of many
    small inputs (answer size), 1000 concurrent 200 KB calls (connection resets)."""
    server = Server(args)
    big = text_of(1_900_000 // 5)[:1_900_000]
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            server.request("/tokenize", {"inputs": big})

    loops = [threading.Thread(target=loop) for _ in range(4)]
    [t.start() for t in loops]
    time.sleep(1)
    health = []
    for _ in range(20):
        health.append(server.request("/health")[1])
        time.sleep(0.1)
    embed = server.request("/embed", {"inputs": "hello world"})
    stop.set()
    [t.join() for t in loops]
    many = {"inputs": ["hi"] * 300_000}
    status, _, payload = server.request("/tokenize", many)
    small = {"inputs": ["hello world"] * 32}
    _, _, small_payload = server.request("/tokenize", small)
    medium = text_of(200_000 // 5)[:200_000]
    results = []

    def one():
        results.append(server.request("/tokenize", {"inputs": medium}, timeout=300)[0])

    threads = [threading.Thread(target=one) for _ in range(1000)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    server.stop()
    statuses = {}
    for s in results:
        statuses[str(s)] = statuses.get(str(s), 0) + 1
    return {"health_median_s": round(statistics.median(health), 4), "health_max_s": round(max(health), 4),
            "embed_during_s": round(embed[1], 3), "many_small_inputs_status": status,
            "many_small_inputs_answer_bytes": len(payload),
            "batch32_answer_bytes": len(small_payload), "concurrent_200kb_statuses": statuses}


def probe_slow_bodies(args):
    """300 connections each send 2 MiB - 1 bytes of a body and stop: memory while they hang."""
    server = Server(args)
    before = rss_kb(server.process.pid)
    chunk = b"x" * (2 * 1024 * 1024 - 1)
    head = (f"POST /embed HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {2 * 1024 * 1024}\r\n\r\n").encode()
    socks, refused_while_sending = [], 0
    for _ in range(300):
        sock = server.connect()
        try:
            sock.sendall(head + chunk)
            socks.append(sock)
        except OSError:
            # Answered 503 and closed before the body was all sent: no room for more bodies.
            refused_while_sending += 1
            sock.close()
    time.sleep(2)
    during = rss_kb(server.process.pid)
    answered = sum(1 for s in socks if closed_after(s, 40) is not None)
    time.sleep(1)
    after = rss_kb(server.process.pid)
    [s.close() for s in socks]
    server.stop()
    return {"connections": 300, "refused_while_sending": refused_while_sending,
            "rss_before_mb": before // 1024, "rss_while_held_mb": during // 1024,
            "answered_or_closed_within_40s": answered + refused_while_sending,
            "rss_after_mb": after // 1024}


PROBES = {
    "idle_flood": probe_idle_flood,
    "half_requests": probe_half_requests,
    "tokenization_memory": probe_tokenization_memory,
    "dropped_clients": probe_dropped_clients,
    "sigterm_drain": probe_sigterm_drain,
    "tokenize": probe_tokenize,
    "slow_bodies": probe_slow_bodies,
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", default="target/release/hipinfer")
    parser.add_argument("--model", default=os.environ.get("HIPINFER_MODEL", "models/all-MiniLM-L6-v2"))
    parser.add_argument("--flood", type=int, default=16000, help="idle connections to open")
    parser.add_argument("--only", nargs="*", choices=sorted(PROBES))
    args = parser.parse_args()
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass
    results = {}
    try:
        for name in args.only or PROBES:
            started = time.monotonic()
            results[name] = PROBES[name](args)
            results[name]["probe_seconds"] = round(time.monotonic() - started, 1)
            print(json.dumps({name: results[name]}), flush=True)
    finally:
        for server in SERVERS:
            if server.process.poll() is None:
                server.process.kill()
    print(json.dumps({"cpu": cpu_model(), "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}))


def cpu_model():
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
