#!/usr/bin/env python3
"""Rank 0's serving overhead with many concurrent streams: per iteration, the time the engine
thread spends outside the model (scheduling, sampling, detokenizing, handing tokens to the HTTP
side) and the HTTP thread's CPU time, against the model's forward time. Reads saker's own
counters from /metrics before and after the load.

    python3 scripts/bench/serve_overhead.py --saker build/saker --model DIR [--streams 64]
        [--tokens 64] [--np 2] [-- extra saker serve flags]
"""
import argparse
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(saker:[a-z_]+|vllm:generation_tokens_total)(\{[^}]*\})? ([0-9.e+-]+)$", line)
        if m:
            out[m.group(1)] = float(m.group(3))
    return out


def stream(port, prompt, tokens, counts, i):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    body = json.dumps({"inputs": prompt, "parameters": {"max_new_tokens": tokens, "ignore_eos_token": True}})
    c.request("POST", "/generate_stream", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    n = 0
    for line in r:
        if line.startswith(b"data:"):
            n += 1
    counts[i] = n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--saker", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--streams", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--np", type=int, default=2)
    ap.add_argument("extra", nargs="*")
    a = ap.parse_args()
    port = free_port()
    cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", str(a.np), a.saker, "serve",
           "--model", a.model, "--port", str(port), "--max-rolling-batch-size", str(max(a.streams, 1))] + a.extra
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(300):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/ping")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        before = metrics(port)
        counts = [0] * a.streams
        threads = [threading.Thread(target=stream, args=(port, f"Prompt number {i} says", a.tokens, counts, i))
                   for i in range(a.streams)]
        t0 = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.time() - t0
        after = metrics(port)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    d = {k: after[k] - before.get(k, 0) for k in after}
    iters = d["saker:iterations_total"]
    fwd = d["saker:forward_seconds_total"] / iters * 1e3
    step = d["saker:iteration_seconds_total"] / iters * 1e3
    http_cpu = d["saker:http_thread_cpu_seconds_total"] / iters * 1e3
    print(f"{a.streams} concurrent streams x {a.tokens} tokens on {a.np} rank(s): {sum(counts)} events in {wall:.2f} s, "
          f"{iters:.0f} iterations, {d['vllm:generation_tokens_total'] / wall:.0f} tokens/s")
    print("| per iteration | ms | share of the forward pass |\n|---|---|---|")
    print(f"| model forward pass | {fwd:.3f} | 100 % |")
    print(f"| engine thread outside the model (scheduling, sampling, detokenizing, hand-off) | {step - fwd:.3f} | {100 * (step - fwd) / fwd:.1f} % |")
    print(f"| HTTP thread CPU (JSON, SSE framing, socket writes), on its own thread | {http_cpu:.3f} | {100 * http_cpu / fwd:.1f} % |")
    if any(c != a.tokens for c in counts):
        print("WARNING: some streams did not get all their tokens", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
