#!/usr/bin/env bash
# Builds the CPU image (docker/Dockerfile) with podman or docker, no registry involved, and checks
# that it honours SageMaker's container contract with the demo model at /opt/ml/model
# (docs/deploy.md records a run):
#   - /ping turns 200 once the model is loaded (the start-up time is reported);
#   - POST /invocations answers JSON, and application/jsonlines when streamed;
#   - serving.properties is read, with option.model_id relative to /opt/ml/model, and OPTION_*
#     variables override it; without the file, OPTION_* variables alone configure the model;
#   - SIGTERM (`stop`) lets an in-flight request finish, and the container exits 0;
#   - it runs as a non-root user; its HEALTHCHECK passes; other arguments run saker subcommands.
# The base image is a Debian bookworm rootfs made here with debootstrap from the mirror apt
# already uses, then imported. All traffic goes to 127.0.0.1.
#
#   bash scripts/test_container.sh
#
# Environment: SAKER_CONTAINER_WORK (scratch and cache folder, /var/tmp/saker-container),
# SAKER_IMAGE (the tag built, localhost/saker:cpu-test), SAKER_REBUILD_BASE=1 (debootstrap
# again), SAKER_BUILD_JOBS (compile jobs in the build, 2), SAKER_XGRAMMAR_TARBALL (XGrammar's
# source release, else taken from a build tree's download cache; else the build downloads it).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
work=${SAKER_CONTAINER_WORK:-/var/tmp/saker-container}
image=${SAKER_IMAGE:-localhost/saker:cpu-test}
t_start=$(date +%s)
failures=0
prefix="saker-ct-$$"
mkdir -p "$work"
: >"$work/engine.log"

log() { echo "test_container: $*"; }
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
die() { echo "FAIL: $*"; exit 1; }

# --- the container engine ------------------------------------------------------------------------
# Podman runs rootful here, without systemd (cgroupfs) and with the host's network; Docker
# elsewhere needs none of that.
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if ! command -v podman >/dev/null 2>&1 && ! { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }; then
  log "installing podman, runc (no container engine found)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends podman runc
fi
if command -v podman >/dev/null 2>&1; then
  engine=(podman --cgroup-manager=cgroupfs --runtime runc)
  build_flags=(--network=host --format docker)  # docker format: OCI images drop HEALTHCHECK
  base=localhost/saker-base:bookworm
  net=host
  # Podman asks for more open files and processes than this machine's kernel lets a container
  # have (runc: "error setting rlimit ... operation not permitted"): ask for what the shell has,
  # and no more than 32768 processes, the most that was granted here.
  nproc=$(ulimit -Hu)
  [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ] && nproc=32768
  run_flags=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit "nproc=$nproc:$nproc")
else
  engine=(docker)
  build_flags=(--network=host)
  run_flags=()
  base=saker-base:bookworm
  net=publish
fi
log "engine: ${engine[*]}"
ctr() { "${engine[@]}" "$@"; }

containers=()
cleanup() {
  for c in "${containers[@]}"; do ctr rm -f "$c" >/dev/null 2>&1 || true; done
  rm -rf "$work/run-$$"
}
trap cleanup EXIT

# --- the base image: Debian bookworm by debootstrap -----------------------------------------------
# The mirror apt uses here: the URIs of the stanza (deb822) or line (one-line format) that serves
# the bookworm suite itself, not -security or -updates.
apt_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'BEGIN { RS = ""; FS = "\n" }
      { uri = ""; ok = 0
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/) { split($i, a, /[ \t]+/); uri = a[2] }
          if ($i ~ /^Suites:/ && $i ~ /[ \t]bookworm([ \t]|$)/) ok = 1
          if ($i ~ /^Types:/ && $i !~ /[ \t]deb([ \t]|$)/) ok = -1
        }
        if (ok == 1 && uri != "") { print uri; exit } }' "$f"
  done
  { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true; } |
    awk '$1 == "deb" { for (i = 2; i < NF; i++) if ($i !~ /^\[/ && $(i + 1) == "bookworm") { print $i; exit } }'
}
base_exists() { ctr image inspect "$base" >/dev/null 2>&1; }
if [ "${SAKER_REBUILD_BASE:-0}" = 1 ] || ! base_exists; then
  command -v debootstrap >/dev/null 2>&1 || {
    log "installing debootstrap"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends debootstrap
  }
  mirror=$(apt_mirror | awk 'NR == 1')  # awk reads it all: no SIGPIPE under pipefail
  [ -n "$mirror" ] || die "no Debian bookworm mirror found in /etc/apt/sources.list{,.d}"
  log "debootstrap bookworm from $mirror"
  $sudo rm -rf "$work/rootfs"
  t=$(date +%s)
  $sudo nice -n 10 debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    die "debootstrap failed (see $work/debootstrap.log)"
  # The rootfs's apt then uses that mirror inside the build, as sources.list says. Like
  # debian:bookworm-slim, it keeps no package lists, downloaded packages, documentation, manual
  # pages or translations, now or after later installs.
  $sudo rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"* \
    "$work/rootfs/usr/share/doc/"* "$work/rootfs/usr/share/man/"* "$work/rootfs/usr/share/info/"* \
    "$work/rootfs/usr/share/locale/"*
  printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-exclude /usr/share/man/*' \
    'path-exclude /usr/share/info/*' 'path-exclude /usr/share/locale/*' |
    $sudo tee "$work/rootfs/etc/dpkg/dpkg.cfg.d/saker-slim" >/dev/null
  $sudo tar -C "$work/rootfs" -c . | ctr import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$base" >/dev/null
  log "base image $base imported ($(($(date +%s) - t)) s)"
else
  log "base image $base already here (SAKER_REBUILD_BASE=1 makes it again)"
fi

# --- the image ------------------------------------------------------------------------------------
# XGrammar's source release goes into the build context so that the build needs no network but
# apt's; docker/deps/ is ignored by git.
xg_name=$(basename "$(sed -n 's/^ *URL \(https:[^ ]*\)$/\1/p' "$root/cmake/xgrammar.cmake")")
if [ ! -f "$root/docker/deps/$xg_name" ]; then
  src=${SAKER_XGRAMMAR_TARBALL:-}
  if [ -z "$src" ]; then
    for f in "$root"/build*/_deps/xgrammar-subbuild/xgrammar-populate-prefix/src/"$xg_name"; do
      [ -f "$f" ] && { src=$f; break; }
    done
  fi
  if [ -n "$src" ]; then
    mkdir -p "$root/docker/deps" && cp "$src" "$root/docker/deps/$xg_name"
  else
    log "no $xg_name here: the build downloads it from PyPI"
  fi
fi
log "building $image"
t=$(date +%s)
nice -n 10 "${engine[@]}" build "${build_flags[@]}" --build-arg BASE_IMAGE="$base" \
  --build-arg BUILD_JOBS="${SAKER_BUILD_JOBS:-2}" \
  --build-arg REVISION="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
  -f "$root/docker/Dockerfile" -t "$image" "$root" >"$work/build.log" 2>&1 ||
  { tail -n 30 "$work/build.log"; die "the image did not build (log: $work/build.log)"; }
build_s=$(($(date +%s) - t))
size=$(ctr image inspect --format '{{.Size}}' "$image")
log "image built in $build_s s; size $size bytes ($((size / 1000000)) MB)"

# --- running it -----------------------------------------------------------------------------------
# The demo model, readable by the image's user (a checkout's files may be private to root), in two
# layouts: A, /opt/ml/model/serving.properties naming a subdirectory; B, the bare checkpoint.
run_dir=$work/run-$$
mkdir -p "$run_dir/A" "$run_dir/B"
cp -r "$root/models/falcon-demo" "$run_dir/A/falcon-demo"
cp -r "$root/models/falcon-demo/." "$run_dir/B/"
cat >"$run_dir/A/serving.properties" <<'EOF'
engine=MPI
option.model_id=falcon-demo
option.rolling_batch=auto
option.max_rolling_batch_size=4
option.output_formatter=json
EOF
chmod -R a+rX "$run_dir"

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port=8080
port_free "$port" || for port in $(seq 18080 18180); do port_free "$port" && break; done
port_free "$port" || die "no free port found"
url=http://127.0.0.1:$port
log "serving on $url"

# start NAME MODEL_DIR [ENV...]: runs the image's default command (serve) detached.
start() {
  local name=$1 model=$2
  shift 2
  local args=(run -d "${run_flags[@]}" --name "$name" -v "$model:/opt/ml/model:ro")
  if [ "$net" = host ]; then
    # The host's network: the port chosen by SAGEMAKER_BIND_TO_PORT, bound to loopback only.
    args+=(--network=host -e SAGEMAKER_BIND_TO_PORT="$port" -e SAKER_HOST=127.0.0.1)
  else
    args+=(-p "127.0.0.1:$port:8080")  # the contract's default port, published on loopback only
  fi
  for e in "$@"; do args+=(-e "$e"); done
  containers+=("$name")
  # Podman without systemd complains here that it cannot set the HEALTHCHECK's timer (the check
  # itself is run below): its messages go to engine.log, shown if the start fails.
  ctr "${args[@]}" "$image" serve >/dev/null 2>>"$work/engine.log" ||
    { tail -n 20 "$work/engine.log"; die "$name did not start"; }
}
# stop NAME: SIGTERM, then SIGKILL after 120 s.
stop() { ctr stop -t 120 "$1" >/dev/null 2>>"$work/engine.log"; }
# wait_ready NAME: seconds until /ping answered 200 (at most 300).
wait_ready() {
  local t0 code
  t0=$(date +%s.%N)
  for _ in $(seq 1 1500); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "$url/ping" || true)
    if [ "$code" = 200 ]; then
      since "$t0"
      return 0
    fi
    [ "$(ctr inspect --format '{{.State.Running}}' "$1")" = true ] || return 1
    sleep 0.2
  done
  return 1
}
# post BODY HEADERS_FILE BODY_FILE: POST /invocations, the status code on stdout.
post() {
  curl -s -o "$3" -D "$2" -w '%{http_code}' -H 'Content-Type: application/json' -d "$1" \
    "$url/invocations"
}
# Seconds since $1 (a `date +%s.%N`), one decimal.
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f\n", b - a }'; }
content_type() { tr -d '\r' <"$1" | awk -F': *' 'tolower($1) == "content-type" { print $2 }'; }
# The checks on a response's JSON are made by Python, which reads it properly.
json_check() { python3 -c "$1" "$2"; }

# Run A: serving.properties, with one value overridden by the environment.
a=$prefix-a
t_run=$(date +%s.%N)
start "$a" "$run_dir/A" OPTION_MAX_ROLLING_BATCH_SIZE=2
if wait_ready "$a" >/dev/null; then
  # From `run` to the first 200: the container's start, the model load and the warm-up.
  total_s=$(since "$t_run")
  pass "/ping answered 200 after $total_s s from 'run' (serving.properties, model_id relative to /opt/ml/model)"
else
  ctr logs "$a" | tail -n 30
  die "/ping never answered 200"
fi

code=$(post '{"inputs": "The old river", "parameters": {"max_new_tokens": 16}}' "$run_dir/h1" "$run_dir/b1")
if [ "$code" = 200 ] && [ "$(content_type "$run_dir/h1")" = application/json ] &&
  json_check 'import json,sys; d=json.load(open(sys.argv[1])); assert isinstance(d["generated_text"], str) and d["generated_text"]' "$run_dir/b1"; then
  pass "POST /invocations: 200 application/json, generated_text $(python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["generated_text"]))' "$run_dir/b1")"
else
  fail "POST /invocations (JSON): status $code, $(content_type "$run_dir/h1"): $(head -c 300 "$run_dir/b1")"
fi

code=$(post '{"inputs": "The old river", "parameters": {"max_new_tokens": 16}, "stream": true}' "$run_dir/h2" "$run_dir/b2")
if [ "$code" = 200 ] && [ "$(content_type "$run_dir/h2")" = application/jsonlines ] &&
  json_check 'import json,sys
lines=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]
assert len(lines) >= 2 and all("token" in l for l in lines) and "generated_text" in lines[-1]' "$run_dir/b2"; then
  pass "POST /invocations stream: 200 application/jsonlines, $(grep -c . "$run_dir/b2") lines, the last with generated_text"
else
  fail "POST /invocations (stream): status $code, $(content_type "$run_dir/h2"): $(head -c 300 "$run_dir/b2")"
fi

# The launch line in the log is what saker launch ran: the environment's 2 over the file's 4.
if ctr logs "$a" 2>&1 | grep -q -- 'serve --model /opt/ml/model/falcon-demo .*--max-rolling-batch-size 2 '; then
  pass "OPTION_MAX_ROLLING_BATCH_SIZE=2 overrides serving.properties' 4 (saker launch's command line)"
else
  fail "OPTION_MAX_ROLLING_BATCH_SIZE override not in the launch line: $(ctr logs "$a" 2>&1 | grep 'saker launch:' | head -n 3)"
fi

uid=$(ctr exec "$a" id -u)
user=$(ctr image inspect --format '{{.Config.User}}' "$image")
# The uid of every process running `saker serve` (mpirun's line names it too); $s keeps this
# script's own command line from matching.
# shellcheck disable=SC2016  # expanded by the container's shell
serve_uid=$(ctr exec "$a" sh -c 's=saker; for p in /proc/[0-9]*; do
    case "$(tr "\0" " " <"$p/cmdline" 2>/dev/null)" in
      *"$s serve --model"*) awk "/^Uid:/ { print \$2 }" "$p/status" ;;
    esac
  done' | sort -u | tr '\n' ' ')
if [ "$uid" != 0 ] && [ -n "$user" ] && [ "$user" != root ] && [ -n "$serve_uid" ] && [[ " $serve_uid" != *" 0 "* ]]; then
  pass "non-root: image user '$user', exec uid $uid, saker serve runs as uid $serve_uid"
else
  fail "root: image user '$user', exec uid $uid, saker serve uid '$serve_uid'"
fi

if [ "${engine[0]}" = podman ]; then
  if ctr healthcheck run "$a" >/dev/null 2>&1; then
    pass "HEALTHCHECK (curl /ping) passes"
  else
    fail "HEALTHCHECK failed"
  fi
elif [ -n "$(ctr image inspect --format '{{.Config.Healthcheck}}' "$image")" ]; then
  pass "HEALTHCHECK present: $(ctr image inspect --format '{{.Config.Healthcheck.Test}}' "$image")"
else
  fail "no HEALTHCHECK in the image"
fi

# SIGTERM with a long request in flight: it must complete, and the container exit 0.
tokens=2000  # with the 5-token prompt, up to the model's 2048 positions
curl -s -N -H 'Content-Type: application/json' \
  -d "{\"inputs\": \"Once upon a time\", \"parameters\": {\"max_new_tokens\": $tokens, \"ignore_eos\": true}, \"stream\": true}" \
  "$url/invocations" >"$run_dir/b3" &
client=$!
for _ in $(seq 1 200); do [ -s "$run_dir/b3" ] && break; sleep 0.05; done
in_flight=$(grep -c . "$run_dir/b3" || true)
finished_before=$(grep -c generated_text "$run_dir/b3" || true)
t=$(date +%s.%N)
stop "$a"
stop_s=$(since "$t")
wait "$client" || true
exit_code=$(ctr inspect --format '{{.State.ExitCode}}' "$a")
got=$(grep -c '"token"' "$run_dir/b3" || true)
if [ "$finished_before" = 0 ] && [ "$in_flight" -ge 1 ] &&
  json_check 'import json,sys
lines=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]
assert "generated_text" in lines[-1]' "$run_dir/b3" && [ "$got" = "$tokens" ] && [ "$exit_code" = 0 ]; then
  pass "SIGTERM drained: the request in flight ($in_flight of $tokens tokens streamed at the signal) finished with all $tokens; the container exited 0 after $stop_s s"
else
  fail "drain: $in_flight lines at the signal (finished already: $finished_before), $got of $tokens tokens, exit code $exit_code"
  ctr logs "$a" 2>&1 | tail -n 15
fi
ctr logs "$a" >"$work/run-a.log" 2>&1 || true

# Run B: no serving.properties; the environment alone, with an option observable in the response
# (jsonlines: /invocations streams without being asked), and SageMaker's GPU count as the
# tensor-parallel degree: two ranks under mpirun in the container.
b=$prefix-b
start "$b" "$run_dir/B" OPTION_OUTPUT_FORMATTER=jsonlines OPTION_ROLLING_BATCH=auto SM_NUM_GPUS=2
if ready_b=$(wait_ready "$b"); then
  if ctr logs "$b" 2>&1 | grep -q 'tensor_parallel_degree unset: 2 (SM_NUM_GPUS)' &&
    ctr logs "$b" 2>&1 | grep -q 'ready: .*; 2 rank(s))'; then
    pass "SM_NUM_GPUS=2 (no GPU visible, degree unset): 2 ranks"
  else
    fail "SM_NUM_GPUS=2: $(ctr logs "$b" 2>&1 | grep -E 'entrypoint|ready' | head -n 3)"
  fi
  code=$(post '{"inputs": "The old river", "parameters": {"max_new_tokens": 8}}' "$run_dir/h4" "$run_dir/b4")
  if [ "$code" = 200 ] && [ "$(content_type "$run_dir/h4")" = application/jsonlines ]; then
    pass "no serving.properties: OPTION_OUTPUT_FORMATTER=jsonlines makes /invocations stream by default (ready in $ready_b s)"
  else
    fail "OPTION_OUTPUT_FORMATTER=jsonlines: status $code, $(content_type "$run_dir/h4")"
  fi
else
  fail "run B (environment only, 2 ranks): /ping never answered 200"
  ctr logs "$b" 2>&1 | tail -n 20
fi
stop "$b"
exit_b=$(ctr inspect --format '{{.State.ExitCode}}' "$b")
if [ "$exit_b" = 0 ]; then pass "run B (2 ranks) stopped by SIGTERM, exit 0"; else fail "run B exit code $exit_b"; fi
ctr logs "$b" >"$work/run-b.log" 2>&1 || true

# Any other first argument is a saker subcommand.
if out=$(ctr run --rm "${run_flags[@]}" -v "$run_dir/B:/opt/ml/model:ro" "$image" info --model /opt/ml/model 2>&1) &&
  grep -q 'model_type: *falcon' <<<"$out"; then
  pass "'IMAGE info --model /opt/ml/model' runs saker info"
else
  fail "saker subcommand: $out"
fi

echo
echo "image: $image, $size bytes ($((size / 1000000)) MB); built in $build_s s"
echo "start-up: /ping 200 after $total_s s from 'run'"
echo "total wall time: $(($(date +%s) - t_start)) s"
if [ "$failures" -gt 0 ]; then
  echo "test_container: $failures check(s) FAILED"
  exit 1
fi
echo "test_container: all checks passed"
