#!/usr/bin/env python3
"""Two nodes without two machines (issue 21): two Linux network namespaces joined by a veth pair,
each with its own host name, and Open MPI launching across them over TCP with an rsh agent of
`ip netns exec`. Checks, with `saker launch --hostfile` at tp 2:

  1. the two-node job gives the same greedy tokens as tp 2 on one node (`mpirun -np 2 saker
     generate`);
  2. a slow link (`tc netem delay 20ms`, or a token bucket where the kernel lacks netem) only
     slows it: the same tokens;
  3. the link taken down mid-request: every rank exits within 30 s, the message names the lost
     rank and its host, the launcher exits non-zero, the client gets an error, not a hang;
  4. the remote rank killed mid-request: the same.

Needs root (namespaces, veth, tc); anywhere else it prints why and exits 77 (CTest: skipped).

    python3 tests/serve/test_two_nodes.py --saker build/saker --fixtures tests/fixtures
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from serve_fixture import model_dir, saker_ranks  # noqa: E402

SKIP = 77
# Names of this run's own (two runs at once, e.g. a sanitizer build's, must not share them); the
# host names stay fixed, since the checks look for them.
_RUN = f"{os.getpid() % 100000:05d}"
NS = (f"saker-n0-{_RUN}", f"saker-n1-{_RUN}")
HOSTS = ("saker-n0", "saker-n1")
IPS = ("10.77.0.1", "10.77.0.2")
VETH = (f"sk{_RUN}a", f"sk{_RUN}b")
PROMPT = "the falcon flies over"
N = 16
FAILED = []


def check(ok, what, detail=""):
    print(("    ok   " if ok else "    FAIL ") + what + ("" if ok else f" -- {detail}"), flush=True)
    if not ok:
        FAILED.append(what)
    return ok


def sh(*cmd, check_rc=True, **kw):
    r = subprocess.run(list(cmd), capture_output=True, text=True, **kw)
    if check_rc and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def in_ns(i, *cmd):
    return ["ip", "netns", "exec", NS[i], *cmd]


def down():
    for ns in NS:
        sh("ip", "netns", "pids", ns, check_rc=False)
        pids = sh("ip", "netns", "pids", ns, check_rc=False).stdout.split()
        for p in pids:
            try:
                os.kill(int(p), signal.SIGKILL)
            except OSError:
                pass
        sh("ip", "netns", "del", ns, check_rc=False)


def up():
    down()
    for ns in NS:
        sh("ip", "netns", "add", ns)
        sh(*in_ns(NS.index(ns), "ip", "link", "set", "lo", "up"))
    sh("ip", "link", "add", VETH[0], "netns", NS[0], "type", "veth", "peer", "name", VETH[1], "netns", NS[1])
    for i in (0, 1):
        sh(*in_ns(i, "ip", "addr", "add", IPS[i] + "/24", "dev", VETH[i]))
        sh(*in_ns(i, "ip", "link", "set", VETH[i], "up"))


def write_agent(workdir):
    """Open MPI's rsh agent: `AGENT HOST COMMAND...` runs COMMAND on that 'node' (namespace), under
    the node's own host name (a UTS namespace), so that Open MPI and saker tell the nodes apart."""
    path = os.path.join(workdir, "netns-rsh")
    cases = "\n".join(f'  {ip}) ns={ns} host={h} ;;' for ip, ns, h in zip(IPS, NS, HOSTS))
    with open(path, "w") as f:
        f.write(f"""#!/bin/sh
# rsh agent for Open MPI: ARGS are HOST then the command line (tests/serve/test_two_nodes.py).
while [ $# -gt 0 ]; do case "$1" in -*) shift ;; *) break ;; esac; done
host=$1; shift
case "$host" in
{cases}
  *) echo "netns-rsh: unknown host $host" >&2; exit 1 ;;
esac
exec ip netns exec "$ns" unshare --uts sh -c "hostname $host; $*"
""")
    os.chmod(path, 0o755)
    return path


def mpi_env(agent):
    env = dict(os.environ)
    env.update({
        "OMPI_MCA_plm_rsh_agent": agent,
        "OMPI_MCA_plm_rsh_no_tree_spawn": "1",
        "OMPI_MCA_btl": "self,tcp",  # never shared memory: the 'nodes' share a kernel
        "OMPI_MCA_pml": "ob1",
        "OMPI_MCA_btl_tcp_if_include": "10.77.0.0/24",
        "OMPI_MCA_oob_tcp_if_include": "10.77.0.0/24",
        "OMPI_MCA_routed": "direct",
        "OMP_NUM_THREADS": "1",
    })
    return env


class Job:
    """saker launch on node 0 (inside its namespace), two ranks over the two nodes."""

    def __init__(self, opts, name, model, agent, extra=(), fault=None):
        self.log_path = os.path.join(opts.workdir, name + ".log")
        self.log = open(self.log_path, "wb")
        hostfile = os.path.join(opts.workdir, "hostfile")
        with open(hostfile, "w") as f:
            f.write(f"{IPS[0]} slots=1\n{IPS[1]} slots=1\n")
        self.port = free_port()
        env = mpi_env(agent)
        if fault:
            env["SAKER_TEST_FAULT"] = fault
        inner = (f"hostname {HOSTS[0]}; exec '{opts.saker}' launch --model '{model}' --tensor-parallel-degree 2 "
                 f"--hostfile '{hostfile}' --host 127.0.0.1 --port {self.port} " + " ".join(extra))
        self.proc = subprocess.Popen(in_ns(0, "unshare", "--uts", "sh", "-c", inner), stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_ready(self, timeout=90):
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the job exited ({self.proc.returncode}):\n{self.text()[-3000:]}")
            r = node0_request(self.port, "GET", "/ping", timeout=3)
            if r and r[0] == 200:
                return
            time.sleep(0.3)
        raise RuntimeError(f"not ready in {timeout} s:\n{self.text()[-3000:]}")

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def node0_request(port, method, path, body=None, timeout=60):
    """An HTTP request from inside node 0's namespace (where rank 0 listens): (status, body)."""
    code = ("import http.client, json, sys\n"
            f"c = http.client.HTTPConnection('127.0.0.1', {port}, timeout={timeout})\n"
            "try:\n"
            f"    c.request({method!r}, {path!r}, body={json.dumps(body) if body is not None else None!r},"
            " headers={'Content-Type': 'application/json'})\n"
            "    r = c.getresponse(); print(r.status); sys.stdout.write(r.read().decode('utf-8', 'replace'))\n"
            "except Exception as e:\n"
            "    print(0); print(repr(e))\n")
    r = subprocess.run(in_ns(0, sys.executable, "-c", code), capture_output=True, text=True, timeout=timeout + 30)
    if not r.stdout:
        return None
    status, _, rest = r.stdout.partition("\n")
    return int(status), rest


def generate_ids(port, n):
    r = node0_request(port, "POST", "/generate", {"inputs": PROMPT, "parameters": {
        "max_new_tokens": n, "details": True, "ignore_eos_token": True}})
    if not r or r[0] != 200:
        raise RuntimeError(f"/generate answered {r}")
    return [t["id"] for t in json.loads(r[1])["details"]["tokens"]]


def rank_left(rank):
    """Pids of this test's saker processes of `rank` still alive: those in the two nodes'
    namespaces only (others on the machine, e.g. a concurrent test's, are not ours to kill)."""
    ours = set()
    for ns in NS:
        try:
            ours.add(os.stat(f"/run/netns/{ns}").st_ino)
        except OSError:
            pass
    found = []
    for p in saker_ranks(rank):
        try:
            if os.stat(f"/proc/{p}/ns/net").st_ino in ours:
                found.append(p)
        except OSError:
            pass
    return found


def fault_case(opts, model, agent, name, act):
    """A job whose link or remote rank fails mid-request: all ranks gone within 30 s, named."""
    print(f"\n[{name}]", flush=True)
    job = Job(opts, name.replace(" ", "-"), model, agent, extra=["--peer-timeout", "5"], fault="0:step_delay:20")
    try:
        job.wait_ready()
        result = {}

        def client():
            result["r"] = node0_request(job.port, "POST", "/generate", {
                "inputs": PROMPT, "parameters": {"max_new_tokens": 1500, "ignore_eos_token": True}}, timeout=60)

        import threading
        th = threading.Thread(target=client)
        th.start()
        time.sleep(1.5)  # the request is running (20 ms a step)
        t0 = time.time()
        act()
        rc = None
        try:
            rc = job.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        took = time.time() - t0
        deadline = t0 + 30
        while (rank_left(0) or rank_left(1)) and time.time() < deadline:
            time.sleep(0.2)
        left = rank_left(0) + rank_left(1)
        for p in left:  # what a rank left behind is doing, for the report
            try:
                for tid in os.listdir(f"/proc/{p}/task"):
                    with open(f"/proc/{p}/task/{tid}/wchan") as f, open(f"/proc/{p}/task/{tid}/comm") as g:
                        print(f"    left: pid {p} thread {tid} {g.read().strip()} waiting in {f.read()}", flush=True)
            except OSError:
                pass
        th.join(timeout=40)
        text = job.text()
        print(f"    the launcher exited {took:.1f} s after the fault with {rc}", flush=True)
        check(rc is not None and rc != 0, "the launcher exited non-zero within 30 s", text[-1500:])
        check(not left, "no rank is left running 30 s after the fault", left)
        # saker's watchdog says "rank 1 on host saker-n1"; mpirun, for a rank it saw die, "rank 1
        # ... on node 10.77.0.2".
        check("rank 1 on host saker-n1" in text or ("process rank 1" in text and IPS[1] in text),
              "the log names the lost rank and its host", text[-1500:])
        r = result.get("r")
        check(not th.is_alive() and r is not None and r[0] != 200,
              "the client in flight got an error, not a hang", r)
    finally:
        job.kill()
        for p in rank_left(0) + rank_left(1):
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--saker", required=True)
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--mpirun", default=shutil.which("mpirun") or "mpirun")
    opts = ap.parse_args()
    opts.saker = os.path.abspath(opts.saker)
    if os.geteuid() != 0:
        print("SKIP: two-node tests need root (network namespaces, veth, tc)")
        return SKIP
    for tool in ("ip", "tc", "unshare"):
        if not shutil.which(tool):
            print(f"SKIP: `{tool}` is not installed")
            return SKIP
    try:
        sh("ip", "netns", "add", f"saker-probe-{_RUN}")
        sh("ip", "netns", "del", f"saker-probe-{_RUN}")
    except RuntimeError as e:
        print(f"SKIP: this machine does not allow network namespaces here: {e}")
        return SKIP
    opts.workdir = tempfile.mkdtemp(prefix="saker-two-nodes-")
    model = model_dir(opts.fixtures, opts.workdir)
    agent = write_agent(opts.workdir)
    try:
        up()
        print("[tp 2 on one node: the reference]", flush=True)
        r = sh(opts.mpirun, "--allow-run-as-root", "--oversubscribe", "-np", "2", opts.saker, "generate",
               "--model", model, "--prompt", PROMPT, "--max-new-tokens", str(N), "--print-ids", "--ignore-eos",
               "--threads", "1", timeout=120)
        reference = [int(x) for x in [l for l in r.stdout.splitlines() if l.strip()][-1].split()]
        check(len(reference) == N, f"{N} greedy tokens at tp 2 on one node")

        print("\n[tp 2 across two nodes, saker launch --hostfile]", flush=True)
        job = Job(opts, "two-nodes", model, agent)
        try:
            job.wait_ready()
            text = job.text()
            check(" --hostfile " in text, "saker launch passed the hostfile to mpirun")
            ids = generate_ids(job.port, N)
            check(ids == reference, "the same tokens as tp 2 on one node", (ids, reference))
            # Rank 1 really runs on node 1: its process is in saker-n1's network namespace.
            pids = rank_left(1)
            ns1 = os.readlink(f"/proc/{pids[0]}/ns/net") if pids else None
            mine = sh("ip", "netns", "exec", NS[1], "readlink", "/proc/self/ns/net").stdout.strip()
            check(ns1 == mine, "rank 1 runs in node 1's namespace", (ns1, mine))

            # netem where the kernel has it; otherwise a token bucket (tbf) slows the link instead.
            slow = sh(*in_ns(1, "tc", "qdisc", "add", "dev", VETH[1], "root", "netem", "delay", "20ms"),
                      check_rc=False)
            how = "tc netem delay 20ms"
            if slow.returncode != 0:
                print(f"    NOTE tc netem is not available here ({slow.stderr.strip()}); tbf instead", flush=True)
                sh(*in_ns(1, "tc", "qdisc", "add", "dev", VETH[1], "root", "tbf", "rate", "256kbit",
                          "burst", "4kb", "latency", "200ms"))
                how = "tc tbf rate 256kbit"
            print(f"\n[a slow link: {how} on node 1]", flush=True)
            t0 = time.time()
            ids = generate_ids(job.port, N)
            took = time.time() - t0
            sh(*in_ns(1, "tc", "qdisc", "del", "dev", VETH[1], "root"))
            check(ids == reference, f"the same tokens over the slow link ({took:.1f} s for {N} tokens)", ids)
        finally:
            job.kill()

        fault_case(opts, model, agent, "the link taken down mid-request",
                   lambda: sh(*in_ns(1, "ip", "link", "set", VETH[1], "down")))
        up()  # a fresh link
        fault_case(opts, model, agent, "the remote rank killed mid-request",
                   lambda: [os.kill(p, signal.SIGKILL) for p in rank_left(1)])
    finally:
        down()
    if FAILED:
        print(f"\nFAILED: {FAILED}\nlogs in {opts.workdir}", flush=True)
        return 1
    shutil.rmtree(opts.workdir, ignore_errors=True)
    print("\nall two-node checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
