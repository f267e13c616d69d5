#!/usr/bin/env python3
"""A soak run of `saker serve` under `mpirun -np 2` (issue 21): for MINUTES, a bounded mix of
streams, cancels (backend socket), disconnects mid-stream, bad inputs, 429 bursts and idle
connections; then checks that nothing leaked or changed:

  - no 5xx at any time (503 is allowed only once the drain has begun, at the end);
  - rank 0's RSS grew by less than RSS_BOUND_MB over its size after the warm-up round;
  - its open file descriptors are back to their count before the run;
  - the KV blocks and the running and waiting counts are back to idle;
  - greedy answers are the same as before the run;
  - SIGTERM then ends the job, every rank with 0.

    scripts/soak.sh MINUTES      (or: python3 tests/serve/soak.py --saker build/saker
                                   --fixtures tests/fixtures --minutes 2)
"""

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_fixture import model_dir, rss_mb  # noqa: E402
from test_serve import Failure, Server, check, metric, metrics, request  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
from saker_ipc_client import SakerIpc, SakerIpcError  # noqa: E402

RSS_BOUND_MB = 64
WORKERS = 6
PROMPTS = ["the river", "a stone bridge", "seven paper lamps", "copper falcon engine"]


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def greedy(port):
    out = []
    for p in PROMPTS:
        r = request(port, "POST", "/generate", {"inputs": p, "parameters": {
            "max_new_tokens": 16, "details": True, "ignore_eos_token": True}})
        if r.status != 200:
            raise Failure(f"greedy {p!r}: {r}")
        out.append([t["id"] for t in r.json()["details"]["tokens"]])
    return out


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.bad = []

    def add(self, action, status, detail=""):
        with self.lock:
            self.counts[(action, status)] = self.counts.get((action, status), 0) + 1
            if isinstance(status, int) and status >= 500:
                self.bad.append((action, status, detail[:200]))


def stream_whole(port, rng):
    body = {"inputs": rng.choice(PROMPTS), "parameters": {"max_new_tokens": rng.randint(4, 64)}}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", "/generate_stream", json.dumps(body), {"Content-Type": "application/json"})
        r = conn.getresponse()
        data = r.read()
        return r.status, data.decode("utf-8", "replace")
    finally:
        conn.close()


def disconnect_mid_stream(port, rng):
    body = {"model": "demo", "messages": [{"role": "user", "content": rng.choice(PROMPTS)}],
            "max_tokens": 400, "stream": True, "ignore_eos": True}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    r = conn.getresponse()
    if r.status == 200:
        for _ in range(rng.randint(1, 5)):
            r.readline()
    conn.close()  # mid-stream
    return r.status, ""


def completions_n(port, rng):
    r = request(port, "POST", "/v1/completions", {"prompt": rng.choice(PROMPTS), "n": 2,
                                                  "max_tokens": rng.randint(1, 24)})
    return r.status, r.body.decode("utf-8", "replace")


def bad_input(port, rng):
    cases = [
        ("/generate", b"{not json"),
        ("/v1/completions", json.dumps({"prompt": "x", "max_tokens": 0}).encode()),
        ("/generate", json.dumps({"inputs": "x", "parameters": {"stop_token_ids": list(range(200))}}).encode()),
        ("/v1/chat/completions", b"[" * 100 + b"]" * 100),
        ("/invocations", json.dumps({"inputs": 5}).encode()),
        ("/generate", b'{"inputs": "abc \xff\xfe"}'),
        ("/nowhere", b"{}"),
    ]
    path, body = rng.choice(cases)
    r = request(port, "POST", path, body, {"Content-Type": "application/json"})
    if r.status < 400 or r.status >= 500:
        return 599, f"bad input {path} {body[:40]!r} answered {r}"  # counted as a failure
    return r.status, ""


def burst(port, rng):
    """Many requests at once: some may get 429 (queue 8), none may get 5xx."""
    statuses = []
    lock = threading.Lock()

    def one():
        try:
            r = request(port, "POST", "/generate", {"inputs": rng.choice(PROMPTS),
                                                    "parameters": {"max_new_tokens": 8}})
            with lock:
                statuses.append(r.status)
        except OSError as e:
            with lock:
                statuses.append(repr(e))

    ts = [threading.Thread(target=one) for _ in range(24)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    worst = max((s for s in statuses if isinstance(s, int)), default=0)
    errors = [s for s in statuses if not isinstance(s, int)]
    if errors:
        return 598, f"burst: {errors[:3]}"
    return worst, f"burst statuses {sorted(set(statuses))}"


def idle_connection(port, rng):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    time.sleep(rng.uniform(0.5, 3))
    s.close()
    return 0, ""


def ipc_cancel(sock_path, rng):
    cl = SakerIpc.connect_unix(sock_path, timeout=30)
    rid = f"r{rng.randint(0, 1 << 30)}"
    try:
        it = cl.generate(rid, rng.choice(PROMPTS), {"max_new_tokens": 300}, stream=True)
        n = 0
        for msg in it:
            n += 1
            if n == 3:
                cl.cancel(rid)
            if msg.get("details"):
                reason = msg["details"]["finish_reason"]
                return (200 if reason in ("cancelled", "length") else 597), reason
        return 596, "the stream ended without details"
    except SakerIpcError as e:
        return e.code, str(e)
    finally:
        cl.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--saker", required=True)
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--mpirun", default=shutil.which("mpirun") or "mpirun")
    ap.add_argument("--minutes", type=float, default=2)
    ap.add_argument("--seed", type=int, default=1)
    opts = ap.parse_args()
    opts.saker = os.path.abspath(opts.saker)
    opts.workdir = tempfile.mkdtemp(prefix="saker-soak-")
    model = model_dir(opts.fixtures, opts.workdir)
    sock = os.path.join(opts.workdir, "saker.sock")
    srv = Server(opts, "soak", model, extra=[
        "--job-queue-size", "8", "--max-rolling-batch-size", "8", "--idle-timeout", "5",
        "--drain-timeout", "5", "--ipc", "unix:" + sock])
    ok = False
    try:
        srv.wait_listening()
        srv.wait_ready()
        port = srv.port
        pid = srv.rank_pid(0)
        answers = greedy(port)
        rng0 = random.Random(opts.seed)
        # One round of every action first, so that lazily grown pools count in the baseline.
        for act in (stream_whole, disconnect_mid_stream, completions_n, bad_input, burst):
            act(port, rng0)
        ipc_cancel(sock, rng0)
        time.sleep(1)
        rss0, fd0 = rss_mb(pid), fds(pid)
        print(f"  baseline: rank 0 RSS {rss0:.0f} MB, {fd0} open fds", flush=True)

        tally = Tally()
        deadline = time.time() + opts.minutes * 60
        actions = [(stream_whole, 4), (disconnect_mid_stream, 3), (completions_n, 3), (bad_input, 3),
                   (burst, 1), (idle_connection, 1), (ipc_cancel, 2)]
        weighted = [a for a, w in actions for _ in range(w)]

        def worker(k):
            rng = random.Random(opts.seed * 1000 + k)
            while time.time() < deadline:
                act = rng.choice(weighted)
                try:
                    status, detail = act(sock if act is ipc_cancel else port, rng)
                except Exception as e:  # noqa: BLE001 - any failure of an action is a finding
                    status, detail = "exception", repr(e)
                    tally.add(act.__name__, status, detail)
                    with tally.lock:
                        tally.bad.append((act.__name__, status, detail[:200]))
                    continue
                tally.add(act.__name__, status, detail)

        samples = []
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(WORKERS)]
        for t in threads:
            t.start()
        t_start, next_report = time.time(), time.time() + 60
        while any(t.is_alive() for t in threads):
            if not srv.alive():
                raise Failure(f"the server died during the run:\n{srv.log_tail(20)}")
            samples.append((time.time(), rss_mb(pid), fds(pid)))
            if time.time() >= next_report:  # a long run says how it goes
                with tally.lock:
                    done, bad = sum(tally.counts.values()), len(tally.bad)
                print(f"  {(time.time() - t_start) / 60:4.1f} min: {done} actions, {bad} failed; rank 0 RSS "
                      f"{samples[-1][1]:.0f} MB, {samples[-1][2]} fds", flush=True)
                next_report += 60
            time.sleep(2)
        for t in threads:
            t.join()
        total = sum(tally.counts.values())
        print(f"  {total} actions in {opts.minutes:g} min:", flush=True)
        for (a, s), n in sorted(tally.counts.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
            print(f"    {a:24s} {str(s):10s} {n}", flush=True)
        print(f"  rank 0 RSS over the run: {min(r for _, r, _ in samples):.0f}..{max(r for _, r, _ in samples):.0f} MB; "
              f"fds {min(f for _, _, f in samples)}..{max(f for _, _, f in samples)}", flush=True)
        check(not tally.bad, "no 5xx and no broken connection during the run", tally.bad[:5])

        t0, state = time.time(), None
        while time.time() - t0 < 30:
            m = metrics(port)
            state = (metric(m, "vllm:num_requests_running"), metric(m, "vllm:num_requests_waiting"),
                     metric(m, "vllm:gpu_cache_usage_perc"))
            if state == (0, 0, 0) and fds(pid) <= fd0:
                break
            time.sleep(0.2)
        check(state == (0, 0, 0), "running, waiting and KV usage back to 0", state)
        rss1, fd1 = rss_mb(pid), fds(pid)
        print(f"  after: rank 0 RSS {rss1:.0f} MB (+{rss1 - rss0:.0f}), {fd1} open fds", flush=True)
        check(fd1 <= fd0, f"open file descriptors back to the baseline ({fd1} <= {fd0})")
        check(rss1 - rss0 < RSS_BOUND_MB, f"RSS grew by less than {RSS_BOUND_MB} MB", f"{rss0:.0f} -> {rss1:.0f}")
        check(greedy(port) == answers, "greedy answers unchanged")
        r0 = srv.rank_pid(0)
        os.kill(r0, signal.SIGTERM)
        try:
            rc = srv.proc.wait(timeout=30)
        except Exception:  # noqa: BLE001 - reported by the check
            rc = None
        check(srv.rank_exits() == {0: 0, 1: 0}, "after SIGTERM every rank exited 0", srv.rank_exits())
        check(rc == 0, "mpirun exited 0", rc)
        ok = True
    except Failure as e:
        print(f"  FAIL {e}\n--- server log (tail) ---\n{srv.log_tail(30)}", flush=True)
    finally:
        if srv.alive():
            srv.kill()
        if ok:
            shutil.rmtree(opts.workdir, ignore_errors=True)
        else:
            print(f"logs kept in {opts.workdir}", flush=True)
    print("soak passed" if ok else "soak FAILED", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
