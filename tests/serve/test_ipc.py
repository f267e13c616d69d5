#!/usr/bin/env python3
"""saker's backend socket with the shipped client (scripts/saker_ipc_client.py): submit, stream,
cancel mid-stream, health, malformed messages (an error back; the connection and the server stay
usable), over a unix socket under mpirun -np 2 with HTTP on at the same time, and over stdio.

    python3 tests/serve/test_ipc.py --saker build/saker --fixtures tests/fixtures
"""
import argparse
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))
from saker_ipc_client import SakerIpc, SakerIpcError  # noqa: E402

FAILED = []


def check(ok, what, detail=""):
    print(("    ok   " if ok else "    FAIL ") + what + ("" if ok else f" -- {detail}"), flush=True)
    if not ok:
        FAILED.append(what)


def stop(server):
    """SIGTERM (a graceful drain), then SIGKILL if it does not end."""
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def model_dir(fixtures, tmp):
    d = os.path.join(tmp, "model")
    os.makedirs(d)
    src = os.path.join(fixtures, "gqa8x4-bf16-sharded")
    for f in os.listdir(src):
        if f != "reference.json":
            shutil.copy(os.path.join(src, f), d)
    shutil.copy(os.path.join(fixtures, "tokenizers", "small384", "tokenizer.json"), d)
    return d


def http_generate(port, inputs, params):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("POST", "/generate", json.dumps({"inputs": inputs, "parameters": params}),
              {"Content-Type": "application/json"})
    return json.loads(c.getresponse().read())


def unix_socket_tests(a, model, tmp):
    sock = os.path.join(tmp, "saker.sock")
    log = open(os.path.join(tmp, "serve.log"), "w+")
    cmd = [a.mpirun, "--allow-run-as-root", "--oversubscribe", "-np", "2", a.saker, "serve", "--model", model,
           "--port", "0", "--threads", "1", "--ipc", "unix:" + sock]
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(300):
            if os.path.exists(sock):
                break
            time.sleep(0.1)
        client = SakerIpc.connect_unix(sock, timeout=10)
        for _ in range(300):
            h = client.health()
            if h and h["ok"]:
                break
            time.sleep(0.1)
        check(h == {"health": "ready", "ok": True}, "health: ready", h)
        log.flush()
        port = int(re.search(r"listening on http://[0-9.]+:(\d+)", open(log.name).read()).group(1))

        params = {"max_new_tokens": 12, "details": True}
        msgs = list(client.generate("a", "The falcon flies", params, stream=True))
        tokens = [m["token"]["id"] for m in msgs if "token" in m]
        last = msgs[-1]
        check(len(tokens) == 12 and last["details"]["finish_reason"] == "length", "stream: 12 token messages, then the result",
              msgs[-1])
        check("".join(m["token"]["text"] for m in msgs) == last["generated_text"], "streamed texts add up to generated_text")
        via_http = http_generate(port, "The falcon flies", params)
        check([t["id"] for t in via_http["details"]["tokens"]] == tokens, "the same tokens as HTTP /generate (both on at once)",
              (tokens, via_http))
        one = list(client.generate(7, "Hello", {"max_new_tokens": 5}))
        check(len(one) == 1 and one[0]["details"]["generated_tokens"] == 5 and one[0]["id"] == 7,
              "without stream: one message with the result", one)

        # Two requests in flight on one connection, told apart by id.
        g1 = client.generate("x", "one", {"max_new_tokens": 20}, stream=True)
        g2 = client.generate("y", "two", {"max_new_tokens": 20}, stream=True)
        m1, m2 = next(g1), next(g2)
        r1, r2 = [m1] + list(g1), [m2] + list(g2)
        check(all(m["id"] == "x" for m in r1) and all(m["id"] == "y" for m in r2) and len(r1) == 20 and len(r2) == 20,
              "two multiplexed streams, each its own 20 tokens")

        # Cancel mid-stream.
        g = client.generate("long", "The falcon", {"max_new_tokens": 1800, "ignore_eos_token": True}, stream=True)
        first = [next(g) for _ in range(3)]
        client.cancel("long")
        rest = list(g)
        check(rest and rest[-1].get("details", {}).get("finish_reason") == "cancelled" and len(first) + len(rest) < 1800,
              "cancel mid-stream: the stream ends as cancelled", rest[-1:] if rest else rest)

        # Malformed messages: an error back, the connection stays usable.
        client.send("this is not json")
        e = client.next_general()
        check(e and e.get("code") == 400 and "not JSON" in e.get("error", ""), "malformed JSON: error 400 back", e)
        client.send({"inputs": "no id"})
        e = client.next_general()
        check(e and e.get("code") == 400 and "`id`" in e.get("error", ""), "a request without an id: error back", e)
        client.send([1, 2])
        e = client.next_general()
        check(e and "JSON object" in e.get("error", ""), "not an object: error back", e)
        try:
            list(client.generate("bad", "hi", {"top_p": 2.0, "do_sample": True}))
            check(False, "bad parameters: error back")
        except SakerIpcError as err:
            check(err.code == 400 and "top_p" in str(err), "bad parameters: error 400 naming top_p", err)
        client.send({"cancel": "nobody"})
        e = client.next_general()
        check(e and e.get("code") == 404 and e.get("id") == "nobody", "cancelling an unknown id: 404 back", e)
        again = list(client.generate("after", "Hello", {"max_new_tokens": 3}))
        check(again and again[-1]["details"]["generated_tokens"] == 3, "the connection still works after the errors")
        # A second connection while the first stays open.
        other = SakerIpc.connect_unix(sock, timeout=10)
        check(other.health()["ok"], "a second connection")
        other.close()
        client.close()
    finally:
        stop(server)
        log.seek(0)
        text = log.read()
        if FAILED:
            print(text[-3000:])


def stdio_tests(a, model, tmp):
    cmd = [a.saker, "serve", "--model", model, "--port", "0", "--threads", "1", "--ipc", "stdio"]
    err = open(os.path.join(tmp, "stdio.log"), "w")
    server = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
    try:
        client = SakerIpc(server.stdout, server.stdin)
        for _ in range(300):
            h = client.health()
            if h and h["ok"]:
                break
            time.sleep(0.1)
        check(h and h["ok"], "stdio: health ready", h)
        msgs = list(client.generate("s", "The falcon flies", {"max_new_tokens": 6}, stream=True))
        check(len(msgs) == 6 and msgs[-1]["details"]["finish_reason"] == "length", "stdio: a stream of 6 tokens", msgs[-1:])
    finally:
        stop(server)
        check(server.returncode == 0, "stdio: the server exits 0 on SIGTERM", server.returncode)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--saker", required=True)
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--mpirun", default="mpirun")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="saker_ipc_")
    try:
        model = model_dir(a.fixtures, tmp)
        print("== unix socket, 2 ranks, HTTP on too", flush=True)
        unix_socket_tests(a, model, tmp)
        print("== stdio, 1 rank", flush=True)
        stdio_tests(a, model, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("FAILED: " + ", ".join(FAILED) if FAILED else "all passed", flush=True)
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
