#!/usr/bin/env bash
# The Slurm job scripts for real: a single-node Slurm cluster from Debian's slurm-wlm and munge,
# started in a temporary directory, runs scripts/slurm/generate.sbatch and serve.sbatch.
#   tests/slurm/test_slurm.sh SAKER_BIN FIXTURES_DIR
# Needs root (slurmd). Exit 77 (skipped) where Slurm is not installed or this is not root.
set -uo pipefail
saker=$(realpath "$1")
fixtures=$(realpath "$2")
root=$(cd "$(dirname "$0")/../.." && pwd)
for tool in slurmctld slurmd munged sbatch scontrol; do
  command -v "$tool" >/dev/null || { echo "SKIPPED: $tool not installed (scripts/setup.sh installs slurm-wlm, munge)"; exit 77; }
done
[ "$(id -u)" -eq 0 ] || { echo "SKIPPED: slurmd needs root"; exit 77; }

d=$(mktemp -d /tmp/saker-slurm.XXXXXX)
fail=0
check() { if eval "$1"; then echo "    ok   $2"; else echo "    FAIL $2"; fail=1; fi; }
cleanup() {
  for p in slurmd slurmctld munged; do [ -f "$d/$p.pid" ] && kill "$(cat "$d/$p.pid")" 2>/dev/null; done
  sleep 0.5
  if [ "$fail" != 0 ]; then
    echo "--- slurmctld.log"; tail -20 "$d/slurmctld.log" 2>/dev/null
    echo "--- slurmd.log"; tail -20 "$d/slurmd.log" 2>/dev/null
    for f in "$d"/*.out; do [ -f "$f" ] && { echo "--- $f"; tail -30 "$f"; }; done
  fi
  rm -rf "$d"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# munge, with its own key and socket.
dd if=/dev/urandom of="$d/munge.key" bs=1024 count=1 2>/dev/null
chmod 400 "$d/munge.key"
mkdir -p "$d/munge"
munged --force --key-file="$d/munge.key" --socket="$d/munge.sock" --pid-file="$d/munged.pid" \
  --log-file="$d/munged.log" --seed-file="$d/munge.seed" || { echo "FAIL: munged did not start"; exit 1; }

node=$(hostname -s)
ctld_port=$(free_port)
slurmd_port=$(free_port)
mkdir -p "$d/state" "$d/spool"
cat > "$d/slurm.conf" <<CONF
ClusterName=sakertest
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$d/munge.sock
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
StateSaveLocation=$d/state
SlurmdSpoolDir=$d/spool
SlurmctldPidFile=$d/slurmctld.pid
SlurmdPidFile=$d/slurmd.pid
SlurmctldLogFile=$d/slurmctld.log
SlurmdLogFile=$d/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
KillWait=30
NodeName=$node NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=test Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
export SLURM_CONF=$d/slurm.conf
slurmctld -f "$SLURM_CONF" || { echo "FAIL: slurmctld did not start"; fail=1; exit 1; }
slurmd -f "$SLURM_CONF" -N "$node" || { echo "FAIL: slurmd did not start"; fail=1; exit 1; }
for _ in $(seq 1 100); do
  sinfo -h -o %t 2>/dev/null | grep -qE "^(idle|mix)" && break
  sleep 0.2
done
check 'sinfo -h -o %t | grep -qE "^(idle|mix)"' "a one-node Slurm cluster is up"

# A model the tests can generate text with: the 384-token fixture and its tokenizer.
model=$d/model
mkdir -p "$model"
cp "$fixtures"/gqa8x4-bf16-sharded/config.json "$fixtures"/gqa8x4-bf16-sharded/model*.safetensors* "$model"/
cp "$fixtures"/tokenizers/small384/tokenizer.json "$model"/

echo "== generate.sbatch"
printf '%s\n' '{"prompt": "The falcon flies", "parameters": {"max_new_tokens": 8, "ignore_eos": true}}' \
  '{"prompt": "Hello", "id": "b", "parameters": {"max_new_tokens": 5, "ignore_eos": true}}' > "$d/in.jsonl"
( cd "$d" && SAKER=$saker SAKER_MODEL=$model SAKER_INPUT=$d/in.jsonl SAKER_OUTPUT=$d/out.jsonl \
    timeout 120 sbatch --wait --ntasks=2 --export=ALL "$root/scripts/slurm/generate.sbatch" >/dev/null )
check '[ "$(wc -l < "$d/out.jsonl" 2>/dev/null)" = 2 ]' "the job wrote one result per prompt"
check 'python3 -c "import json,sys; r=[json.loads(l) for l in open(\"$d/out.jsonl\")]; sys.exit(not (r[0][\"generated_tokens\"]==8 and r[1][\"id\"]==\"b\" and r[1][\"generated_tokens\"]==5))"' \
  "in input order, with the requested lengths"
check 'grep -q "saker-generate: done, 2 results" "$d"/saker-generate-*.out' "the job's log ends with its summary"

echo "== serve.sbatch"
port=$(free_port)
job=$(cd "$d" && SAKER=$saker SAKER_MODEL=$model SAKER_PORT=$port SAKER_HOST=127.0.0.1 SAKER_DRAIN=20 \
      sbatch --parsable --ntasks=2 --export=ALL "$root/scripts/slurm/serve.sbatch")
up=0
for _ in $(seq 1 150); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "localhost:$port/ping")" = 200 ] && { up=1; break; }
  sleep 0.2
done
check '[ $up = 1 ]' "the served model answers /ping inside the allocation"
answer=$(curl -s "localhost:$port/generate" -H 'Content-Type: application/json' \
  -d '{"inputs": "The falcon", "parameters": {"max_new_tokens": 6, "details": true}}')
check 'echo "$answer" | grep -q "\"generated_tokens\":6"' "it answers a request"
# What Slurm does before a time limit (--signal=B:TERM@120): the batch script gets SIGTERM.
scancel --batch --signal=TERM "$job"
for _ in $(seq 1 150); do
  state=$(scontrol show job "$job" 2>/dev/null | sed -n 's/.*JobState=\([A-Z]*\).*/\1/p')
  [ "$state" = COMPLETED ] || [ "$state" = FAILED ] || [ "$state" = CANCELLED ] && break
  sleep 0.2
done
check '[ "$state" = COMPLETED ]' "the job ends COMPLETED after the signal (state: $state)"
check 'grep -q "saker-serve: exit status 0" "$d"/saker-serve-*.out' "every rank drained and exited 0"
check 'grep -q "signal 15: draining" "$d"/saker-serve-*.out' "rank 0 drained"
exit $fail
