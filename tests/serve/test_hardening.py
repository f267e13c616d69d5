#!/usr/bin/env python3
"""Hostile and careless clients against `saker serve` under `mpirun -np 2` (issue 21): the limits
on a request's head and lists, the work one request may ask for, a client that vanishes or stops
reading, a large body that must not hold the I/O thread, connection and time limits, the drain
deadline with orphaned sequences, the backend socket's bounds and mode, and the API key through
the official `openai` and `text-generation` clients. Each case names what it guards against.

    tests/serve/run_serve_tests.sh build/saker mpirun -- (for the venv), or directly:
    python3 tests/serve/test_hardening.py --saker build/saker --fixtures tests/fixtures
"""

import argparse
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_fixture import model_dir, rss_mb  # noqa: E402
from test_serve import (ABORT, Failure, Server, check, metric, metrics, note,  # noqa: E402
                        request, short)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
from saker_ipc_client import SakerIpc  # noqa: E402

API_KEY = "test-key-0123456789"


def raw_exchange(port, data, timeout=10):
    """Sends raw bytes, returns what comes back until the server closes (or the timeout)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        s.close()


def status_of(raw):
    try:
        return int(raw.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


def wait_idle(port, abort0, want_aborts, timeout=15):
    """Waits for running 0, KV usage 0 and `want_aborts` more aborted requests; returns the state."""
    t0, last = time.time(), None
    while time.time() - t0 < timeout:
        m = metrics(port)
        last = (metric(m, "vllm:num_requests_running"), metric(m, "vllm:gpu_cache_usage_perc"),
                metric(m, "vllm:request_success_total", ABORT) - abort0)
        if last == (0, 0, want_aborts):
            break
        time.sleep(0.05)
    return last, time.time() - t0


def post_raw(path, body, extra=b"", key=None):
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body + extra


def wait_ready_tls(port, cert, timeout=60):
    import ssl
    ctx = ssl.create_default_context(cafile=cert)
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                    s.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if s.recv(100).startswith(b"HTTP/1.1 200"):
                        return
        except OSError:
            pass
        time.sleep(0.1)
    raise Failure("the HTTPS server was not ready in time")


# ----------------------------------------------------------------------------------------------


def case_head_limits(c):
    port = c.a.port
    r = raw_exchange(port, b"GET /health?" + b"x" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    check(status_of(r) == 414 and b"the limit is 8192" in r, "a 9000-byte URL: 414 naming the 8192-byte limit",
          short(r))
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(120))
    r = raw_exchange(port, b"GET /health HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
    check(status_of(r) == 431 and b"header fields; the limit is 100" in r,
          "120 header fields: 431 naming the limit of 100", short(r))
    r = raw_exchange(port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 20000 + b"\r\n\r\n")
    check(status_of(r) == 431 and b"larger than the limit" in r,
          "a 20 KB header: 431 naming the limit", short(r))
    r = raw_exchange(port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 12000 + b"\r\n\r\n")
    check(status_of(r) == 431 and b"the limit is 16384" not in r and b"bytes; the limit is" in r,
          "a 12 KB header (under the parser's bound, over --max-header-bytes 8KiB): 431", short(r))
    check(request(port, "GET", "/health").status == 200, "the server answers normally afterwards")


def case_list_limits(c):
    port = c.a.port

    def refused(path, body, substr, what):
        r = request(port, "POST", path, body)
        check(r.status in (400, 422) and substr in r.body.decode(), what, repr(r))

    refused("/v1/completions", {"prompt": ["hi"] * 65, "max_tokens": 1}, "at most 64",
            "65 prompts in one completions request: 400 naming the limit of 64 sequences")
    refused("/v1/completions", {"prompt": ["hi"] * 5, "n": 16, "max_tokens": 1}, "80 sequences",
            "5 prompts x n 16: 400 naming the 80 sequences")
    refused("/generate", {"inputs": "hi", "parameters": {"stop_token_ids": list(range(129))}},
            "the limit is 128", "129 stop_token_ids: 422 naming the limit of 128")
    refused("/generate", {"inputs": "hi", "parameters": {"stop": ["z" * 2000]}}, "the limit is 1024",
            "a 2000-byte stop string: 422 naming the limit of 1024 bytes")
    refused("/generate", {"inputs": "hi", "parameters": {"stop": ["a%d" % i for i in range(17)]}},
            "the limit is 16", "17 stop strings: 422 naming the limit of 16")
    refused("/v1/completions", {"prompt": "hi", "max_tokens": 10, "logprobs": 21}, "[0, 20]",
            "logprobs 21: 400 naming [0, 20]")
    refused("/v1/completions", {"prompt": "hi", "max_tokens": 1, "logit_bias": {"5": 1}}, "logit_bias",
            "logit_bias entries: 400 (not supported)")
    refused("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "n": 17},
            "[1, 16]", "n 17: 400 naming [1, 16]")
    # --max-request-tokens 3000 on this server: 4 copies x (prompt + 1000) is past it.
    refused("/v1/completions", {"prompt": "a b c", "n": 4, "max_tokens": 1000}, "more than 3000 tokens",
            "n 4 x 1000 new tokens: 400 naming --max-request-tokens 3000")
    r = request(port, "POST", "/v1/completions", {"prompt": "a b c", "n": 2, "max_tokens": 4})
    check(r.status == 200 and len(r.json()["choices"]) == 2, "n 2 x 4 tokens is served", repr(r))


def case_amplification(c):
    """A 1.6 MB body whose prompts x n x stop strings once multiplied to gigabytes."""
    port, pid = c.b.port, c.b.rank_pid(0)
    before = rss_mb(pid)
    stops = ["s%d" % i + "q" * 100000 for i in range(16)]
    body = {"prompt": ["hi"] * 64, "n": 16, "max_tokens": 1, "stop": stops}
    t0 = time.time()
    r = request(port, "POST", "/v1/completions", body, headers={"Authorization": f"Bearer {API_KEY}"})
    after = rss_mb(pid)
    print(f"    {len(json.dumps(body)) / 1e6:.1f} MB body answered {r.status} in {time.time() - t0:.2f} s; rank 0 "
          f"RSS {before:.0f} -> {after:.0f} MB", flush=True)
    check(r.status == 400, "the amplifying request is refused with 400", repr(r))
    check(after - before < 100, "rank 0's memory grew by less than 100 MB", f"{before:.0f} -> {after:.0f} MB")


def case_vanished_client(c):
    """A non-streaming request, one more byte, then a closed socket: nothing is ever written to
    it, so only the read side can tell; the old watch took the byte for a pipelined request."""
    port = c.a.port
    abort0 = metric(metrics(port), "vllm:request_success_total", ABORT)
    body = json.dumps({"prompt": "a client that leaves", "n": 2, "max_tokens": 1400, "ignore_eos": True}).encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(post_raw("/v1/completions", body, b"G"))
    t0 = time.time()
    while metric(metrics(port), "vllm:num_requests_running") < 2 and time.time() - t0 < 10:
        time.sleep(0.01)
    check(metric(metrics(port), "vllm:num_requests_running") == 2, "its 2 sequences run")
    s.close()
    state, took = wait_idle(port, abort0, 2)
    check(state == (0, 0, 2), "after the close: running 0, KV usage 0, 2 aborted", state)
    print(f"    cancelled {took:.2f} s after the close", flush=True)
    # The same with a pipelined request that is whole: it is served after the first.
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    one = json.dumps({"inputs": "pipelined", "parameters": {"max_new_tokens": 3}}).encode()
    s.sendall(post_raw("/generate", one) + post_raw("/generate", one))
    data, t0 = b"", time.time()
    while data.count(b"HTTP/1.1 200") < 2 and time.time() - t0 < 20:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    check(data.count(b"HTTP/1.1 200") == 2, "two pipelined requests on one connection are both answered",
          short(data))


def case_slow_reader(c):
    """A client that stops reading its stream: once the kernel's socket buffers are full (up to
    4 MB on Linux), past --max-output-buffer (64 KiB here) its requests are cancelled. The stream
    would be about 13 MB: 16 choices x 2000 tokens, each event with 5 top logprobs."""
    port = c.c.port
    abort0 = metric(metrics(port), "vllm:request_success_total", ABORT)
    body = json.dumps({"prompt": "a client that stops reading", "n": 16, "max_tokens": 2000, "logprobs": 5,
                       "stream": True, "ignore_eos": True}).encode()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(post_raw("/v1/completions", body))
    state, took = wait_idle(port, abort0, 16, timeout=60)
    check(state == (0, 0, 16), "the unread stream was cancelled: running 0, KV usage 0, 16 aborted", state)
    print(f"    cancelled after {took:.1f} s", flush=True)
    log = c.c.log_text()
    check("stopped reading its stream" in log, "rank 0 logged why")
    s.close()


def case_io_thread(c):
    """A 4 MB prompt (with `truncate`, so it must be tokenized) must not delay /health."""
    port, key = c.b.port, {"Authorization": f"Bearer {API_KEY}"}
    # Distinct words, so that the tokenizer's word cache does not make this cheap.
    text = " ".join(f"w{i * 7919 % 1000003}x{i % 97}" for i in range(400000))[:4000000]
    body = {"inputs": text, "parameters": {"max_new_tokens": 1, "truncate": 8}}
    done = {}

    def big():
        t = time.time()
        done["resp"] = request(port, "POST", "/generate", body, headers=key, timeout=120)
        done["t"] = time.time() - t

    th = threading.Thread(target=big)
    th.start()
    time.sleep(0.05)  # the body is being sent or tokenized
    lat = []
    while th.is_alive() and len(lat) < 200:
        t = time.time()
        request(port, "GET", "/health")
        lat.append(time.time() - t)
    th.join()
    worst = max(lat) if lat else 0
    print(f"    the 4 MB request took {done['t']:.2f} s; {len(lat)} /health calls meanwhile, the slowest "
          f"{worst * 1e3:.0f} ms", flush=True)
    check(done["resp"].status == 200, "the 4 MB prompt is served (truncated to 8 tokens)", repr(done["resp"]))
    if done["t"] < 0.3:
        note("the big request was too quick here to show a delay; nothing more to check")
        return
    check(worst < 0.5 * done["t"], "no /health waited for the big request to be tokenized",
          f"slowest {worst:.3f} s of {done['t']:.3f} s")
    # Without truncate, a prompt that cannot fit is refused unread.
    t = time.time()
    r = request(port, "POST", "/generate", {"inputs": text, "parameters": {"max_new_tokens": 1}}, headers=key)
    check(r.status == 422 and "a prompt of at most 2047 tokens is at most" in r.body.decode(),
          f"the same prompt without truncate: 422 in {time.time() - t:.2f} s", repr(r))


def case_connections(c):
    port = c.a.port
    socks = []
    try:
        for _ in range(6):  # --max-connections 6
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(0.2)
        r = raw_exchange(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        check(status_of(r) == 503 and b"too many open connections (the limit is 6)" in r,
              "a 7th connection: 503 naming the limit of 6", short(r))
    finally:
        for s in socks:
            s.close()
    time.sleep(0.2)
    check(request(port, "GET", "/health").status == 200, "after they close, connections are served again")


def case_idle(c):
    """--idle-timeout 2: a request that never finishes arriving (slowloris) is dropped."""
    port = c.a.port
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"inp")
    t0 = time.time()
    try:
        got = s.recv(100)
    except socket.timeout:
        got = None
    took = time.time() - t0
    s.close()
    check(got == b"" and 1.5 < took < 6, f"a half-sent request is closed after the idle timeout ({took:.1f} s)",
          got)


def case_ipc(c):
    sock = c.ipc_path
    mode = stat.S_IMODE(os.stat(sock).st_mode)
    check(mode == 0o600, "the backend socket is created with mode 0600", oct(mode))
    cl = SakerIpc.connect_unix(sock)
    check(cl.health().get("ok") is True, "the backend socket answers")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock)
    s.settimeout(20)
    s.sendall(b'{"id": 1, "inputs": "' + b"x" * (300 * 1024) + b'"}\n')
    out = b""
    while True:
        try:
            chunk = s.recv(65536)
        except (socket.timeout, ConnectionResetError):
            break
        if not chunk:
            break
        out += chunk
    s.close()
    check(b'"code":413' in out and b"longer than the limit of 262144 bytes" in out,
          "a 300 KB message (the limit is --max-body-bytes 256KiB): an error naming the limit, then closed",
          short(out))
    check(cl.health().get("ok") is True, "the other connection still works")


def case_request_timeout(c):
    port = c.b.port
    headers = {"Authorization": f"Bearer {API_KEY}"}
    t0 = time.time()
    r = request(port, "POST", "/v1/completions", {"prompt": "slow", "max_tokens": 1500, "ignore_eos": True},
                headers=headers)
    took = time.time() - t0
    check(r.status == 408 and "request timeout (1 s)" in r.body.decode() and took < 5,
          f"a request past --request-timeout 1: 408 naming it, after {took:.1f} s", repr(r))


def case_auth(c):
    import openai
    import text_generation
    port = c.b.port
    base = f"http://127.0.0.1:{port}"
    bad = openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0)
    try:
        bad.completions.create(model="demo", prompt="hi", max_tokens=2)
        raise Failure("a wrong key was accepted")
    except openai.AuthenticationError as e:
        check(e.status_code == 401, "openai client, wrong key: AuthenticationError (401)")
    good = openai.OpenAI(base_url=base + "/v1", api_key=API_KEY, max_retries=0)
    out = good.completions.create(model="demo", prompt="hi", max_tokens=2, temperature=0,
                                  extra_body={"ignore_eos": True})
    check(out.choices and out.usage.completion_tokens == 2, "openai client, right key: served")
    try:
        text_generation.Client(base).generate("hi", max_new_tokens=2)
        raise Failure("text-generation without a key was served")
    except Failure:
        raise
    except Exception as e:  # noqa: BLE001 - the client maps 401 to its UnknownError
        check("API key" in str(e), f"text-generation client, no key: refused ({type(e).__name__}: {e})")
    tg = text_generation.Client(base, headers={"Authorization": f"Bearer {API_KEY}"})
    check(tg.generate("hi", max_new_tokens=2).details.generated_tokens >= 1,
          "text-generation client, right key: served")
    check(request(port, "GET", "/health").status == 200, "/health needs no key")
    check(API_KEY not in c.b.log_text(), "the key does not appear in the server's log")
    # From the environment, the key is not in any process's command line.
    cmdlines = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmdlines.append(f.read())
            except OSError:
                pass
    check(not any(API_KEY.encode() in cl for cl in cmdlines), "the key is in no process's command line (ps)")


def case_drain(c):
    """Sequences whose clients never read (n 4, 1500 tokens each, two connections) must not hold
    the drain past --drain-timeout 2."""
    b = c.c
    port = b.port
    body = json.dumps({"prompt": "orphan", "n": 4, "max_tokens": 1500, "ignore_eos": True}).encode()
    socks = []
    for _ in range(2):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(post_raw("/v1/completions", body))
        socks.append(s)
    t0 = time.time()
    while metric(metrics(port), "vllm:num_requests_running") < 8 and time.time() - t0 < 10:
        time.sleep(0.02)
    r0 = b.rank_pid(0)
    os.kill(r0, signal.SIGTERM)
    t0 = time.time()
    try:
        rc = b.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        rc = None
    took = time.time() - t0
    for s in socks:
        s.close()
    print(f"    the job exited {took:.1f} s after SIGTERM with {rc}", flush=True)
    check(rc is not None and took < 12, "the drain deadline (2 s) held: the job ended within 12 s", took)


def case_tls(c):
    """HTTPS with a self-signed certificate, through the real openai client (httpx)."""
    import openai
    import ssl
    port = c.d.port
    # The client's own HTTP client, trusting the test's certificate.
    http = getattr(openai, "DefaultHttpx2Client", None) or openai.DefaultHttpxClient

    def trusting():
        return http(verify=ssl.create_default_context(cafile=c.cert))

    client = openai.OpenAI(base_url=f"https://127.0.0.1:{port}/v1", api_key=API_KEY, max_retries=0,
                           http_client=trusting())
    out = client.completions.create(model="demo", prompt="over TLS", max_tokens=4, temperature=0,
                                    extra_body={"ignore_eos": True})
    check(out.usage.completion_tokens == 4, "openai client over HTTPS: a completion of 4 tokens")
    stream = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}],
                                            max_tokens=6, temperature=0, stream=True,
                                            extra_body={"ignore_eos": True})
    pieces = [ch.choices[0].delta.content for ch in stream if ch.choices and ch.choices[0].delta.content]
    check(len(pieces) >= 1, f"openai client over HTTPS: a streamed chat ({len(pieces)} pieces)")
    try:
        openai.OpenAI(base_url=f"https://127.0.0.1:{port}/v1", api_key="wrong", max_retries=0,
                      http_client=trusting()).models.list()
        raise Failure("a wrong key was accepted over HTTPS")
    except openai.AuthenticationError:
        check(True, "over HTTPS, a wrong key (from --api-key-file) is refused with 401")
    try:
        openai.OpenAI(base_url=f"https://127.0.0.1:{port}/v1", api_key=API_KEY, max_retries=0).models.list()
        raise Failure("an unverified certificate was accepted")
    except openai.APIConnectionError:
        check(True, "a client that does not trust the certificate cannot connect")
    r = raw_exchange(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5)
    check(b"200 OK" not in r, "plain HTTP on the HTTPS port gets no answer", short(r))
    ctx = ssl.create_default_context(cafile=c.cert)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = s.recv(4096)
    check(data.startswith(b"HTTP/1.1 200"), "the server still answers over TLS afterwards", short(data))
    # A wrong key file is named at start-up.
    r = subprocess.run([c.opts.saker, "serve", "--model", c.model_dir, "--port", "0", "--ssl-certfile", c.cert,
                        "--ssl-keyfile", c.cert + ".missing"], capture_output=True, text=True, timeout=60)
    check(r.returncode != 0 and "--ssl-keyfile" in r.stderr and ".missing" in r.stderr,
          "a missing key file stops serve with a message naming it", r.stderr[-300:])


CASES = [
    ("head limits (URL, header count and size)", "a", case_head_limits),
    ("list and work limits", "a", case_list_limits),
    ("amplification", "b", case_amplification),
    ("a client that vanishes", "a", case_vanished_client),
    ("a client that stops reading", "c", case_slow_reader),
    ("a 4 MB body off the I/O thread", "b", case_io_thread),
    ("--max-connections", "a", case_connections),
    ("--idle-timeout", "a", case_idle),
    ("backend socket bounds and mode", "a", case_ipc),
    ("--request-timeout", "b", case_request_timeout),
    ("API key through the clients", "b", case_auth),
    ("drain deadline with orphans", "c", case_drain),
    ("HTTPS", "d", case_tls),
]


class Ctx:
    pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--saker", required=True)
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--mpirun", default=shutil.which("mpirun") or "mpirun")
    ap.add_argument("--only", default="", help="substrings of case names")
    opts = ap.parse_args()
    opts.saker = os.path.abspath(opts.saker)
    opts.workdir = tempfile.mkdtemp(prefix="saker-hardening-")
    c = Ctx()
    c.opts = opts
    c.model_dir = model_dir(opts.fixtures, opts.workdir)
    c.ipc_path = os.path.join(opts.workdir, "saker.sock")
    # Steps last 2 ms or more, so that long requests are still running when the cases look.
    c.a = Server(opts, "limits", c.model_dir, fault="0:step_delay:2", extra=[
        "--max-header-bytes", "8KiB", "--max-connections", "6", "--idle-timeout", "2",
        "--max-output-buffer", "64KiB", "--max-request-tokens", "3000", "--max-body-bytes", "256KiB",
        "--ipc", "unix:" + c.ipc_path])
    # The key from the environment (so not in `ps`); the default 4 MiB body limit, for the 4 MB body.
    os.environ["SAKER_API_KEY"] = API_KEY
    c.b = Server(opts, "auth", c.model_dir, fault="0:step_delay:2", extra=["--request-timeout", "1"])
    del os.environ["SAKER_API_KEY"]
    c.cert, key = os.path.join(opts.workdir, "cert.pem"), os.path.join(opts.workdir, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", c.cert,
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    key_file = os.path.join(opts.workdir, "api.key")
    with open(key_file, "w") as f:
        f.write(API_KEY + "\n")
    c.d = Server(opts, "tls", c.model_dir, extra=["--ssl-certfile", c.cert, "--ssl-keyfile", key,
                                                  "--api-key-file", key_file])
    c.c = Server(opts, "drain", c.model_dir, fault="0:step_delay:2", extra=["--drain-timeout", "2", "--max-output-buffer", "64KiB"])
    failures = []
    try:
        for s in (c.a, c.b, c.c):
            s.wait_listening()
            s.wait_ready()
        c.d.wait_listening()
        wait_ready_tls(c.d.port, c.cert)
        for name, server, fn in CASES:
            if opts.only and not any(o in name for o in opts.only.split(",")):
                continue
            print(f"\n[{name}]", flush=True)
            t = time.time()
            try:
                fn(c)
                print(f"    passed in {time.time() - t:.1f} s", flush=True)
            except Exception as e:  # noqa: BLE001 - a failed case is reported, the rest go on
                failures.append(name)
                print(f"    FAIL {type(e).__name__}: {e}", flush=True)
                if not isinstance(e, Failure):
                    traceback.print_exc()
                srv = getattr(c, server)
                print(f"    --- server {srv.name} log (tail) ---\n{srv.log_tail(25)}", flush=True)
    finally:
        for s in (c.a, c.b, c.c, c.d):
            if s.alive():
                s.kill()
        if not failures:
            shutil.rmtree(opts.workdir, ignore_errors=True)
        else:
            print(f"\nlogs kept in {opts.workdir}", flush=True)
    print("\nFAILED: " + "; ".join(failures) if failures else "\nall hardening checks passed", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
