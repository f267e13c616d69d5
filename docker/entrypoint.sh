#!/usr/bin/env bash
# The image's entrypoint: SageMaker's bring-your-own-container contract on top of `saker launch`
# (docs/deploy.md).
#
#   serve [saker launch options]  runs the model at /opt/ml/model: its serving.properties if there
#                                 is one, OPTION_* / SERVING_* environment variables over it (saker
#                                 launch reads both), on port 8080 or $SAGEMAKER_BIND_TO_PORT.
#   anything else                 runs that saker subcommand: `docker run IMAGE generate --model ...`
#
# Environment read here: SAGEMAKER_BIND_TO_PORT, OPTION_MODEL_ID (or HF_MODEL_ID),
# OPTION_TENSOR_PARALLEL_DEGREE, CUDA_VISIBLE_DEVICES, SM_NUM_GPUS, SAKER_MODEL_ROOT
# (/opt/ml/model), SAKER_HOST (0.0.0.0), SAKER_DRAIN_TIMEOUT (seconds, 30).
set -euo pipefail

# SageMaker collects stdout and stderr alike; one stream keeps the lines in order.
exec 2>&1

if [ "$#" -eq 0 ] || [ "$1" != serve ]; then
  exec saker "$@"
fi
shift

model_root=${SAKER_MODEL_ROOT:-/opt/ml/model}
say() { echo "saker-entrypoint: $*"; }
die() { say "error: $*"; exit 2; }

# The value of key $1 in Java properties file $2, as saker's own parser reads it (=, : or blanks
# between key and value, # and ! comments, trailing-backslash continuations; the last one wins).
# Exit status 1 when the key is absent.
property() {
  awk -v want="$1" '
    function trim(s) { sub(/^[ \t\f\r]+/, "", s); sub(/[ \t\f\r]+$/, "", s); return s }
    {
      sub(/\r$/, "")
      if (logical == "" && (trim($0) == "" || trim($0) ~ /^[#!]/)) next
      slashes = match($0, /\\+$/) ? RLENGTH : 0
      if (slashes % 2 == 1) { logical = logical trim(substr($0, 1, length($0) - 1)); next }
      line = logical trim($0); logical = ""
      if (match(line, /[=: \t]/)) {
        key = trim(substr(line, 1, RSTART - 1)); rest = substr(line, RSTART)
        sub(/^[ \t]+/, "", rest); if (rest ~ /^[=:]/) rest = substr(rest, 2)
        value = trim(rest)
      } else { key = line; value = "" }
      if (key == want) { found = 1; result = value }
    }
    END { if (found) print result; exit !found }' "$2"
}

props=""
[ -f "$model_root/serving.properties" ] && props=$model_root/serving.properties
# A setting's value: the environment variable over the file, as saker launch itself ranks them.
setting() {
  local env_name=$1 key=$2
  if [ -n "${!env_name-}" ]; then
    printf '%s\n' "${!env_name}"
  elif [ -n "$props" ]; then
    property "$key" "$props" || true
  fi
}

# option.model_id: relative to the model root (LMI puts the S3 model data there), the root itself
# when unset. saker loads local directories only; a hub id or an S3 URL is refused here by name.
# HF_MODEL_ID: the name LMI and the SageMaker SDK also accept, under OPTION_MODEL_ID.
model_id=$(OPTION_MODEL_ID=${OPTION_MODEL_ID:-${HF_MODEL_ID-}} setting OPTION_MODEL_ID option.model_id)
case "$model_id" in
  "") model_dir=$model_root ;;
  s3://* | http://* | https://*)
    die "option.model_id=$model_id: saker loads a local directory; give SageMaker the model" \
      "data (ModelDataUrl), which it unpacks at $model_root, and set option.model_id relative to it" ;;
  /*) model_dir=$model_id ;;
  *) model_dir=$model_root/$model_id ;;
esac
model_dir=$(realpath -m "$model_dir")
[ -f "$model_dir/config.json" ] ||
  die "option.model_id=${model_id:-(unset)}: $model_dir holds no config.json (a Hugging Face" \
    "model directory is expected there)"

# The tensor-parallel degree when neither the file nor the environment sets it: the GPUs this
# container sees, else SageMaker's SM_NUM_GPUS, else one rank.
visible_gpus() {
  if [ -n "${CUDA_VISIBLE_DEVICES+set}" ]; then
    case "$CUDA_VISIBLE_DEVICES" in
      "" | -1 | none | NoDevFiles) echo 0 ;;
      *) awk -F, '{ print NF }' <<<"$CUDA_VISIBLE_DEVICES" ;;
    esac
  elif command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true
  else
    echo 0
  fi
}
tp_args=()
if [ -z "$(setting OPTION_TENSOR_PARALLEL_DEGREE option.tensor_parallel_degree)" ]; then
  tp=$(visible_gpus)
  from="visible GPUs"
  if [ "${tp:-0}" -lt 1 ] && [ -n "${SM_NUM_GPUS-}" ] && [ "$SM_NUM_GPUS" -ge 1 ] 2>/dev/null; then
    tp=$SM_NUM_GPUS from=SM_NUM_GPUS
  fi
  [ "${tp:-0}" -ge 1 ] || { tp=1; from="no GPU visible"; }
  say "option.tensor_parallel_degree unset: $tp ($from)"
  tp_args=(--tensor-parallel-degree "$tp")
fi

# Named explicitly: given --model, saker launch would look for the file in the model directory,
# which here may be a subdirectory of the root.
props_args=()
[ -z "$props" ] || props_args=(--properties "$props")

port=${SAGEMAKER_BIND_TO_PORT:-8080}
say "model $model_dir${props:+, $props}, port $port"
# Relative paths elsewhere in serving.properties (a draft model) resolve against the model root.
cd "$model_root"
# exec: saker launch becomes tini's child, so `docker stop`'s SIGTERM reaches it; it passes the
# signal to rank 0, which drains in-flight requests and stops every rank with status 0.
exec saker launch "${props_args[@]}" --model "$model_dir" "${tp_args[@]}" --host "${SAKER_HOST:-0.0.0.0}" \
  --port "$port" --drain-timeout "${SAKER_DRAIN_TIMEOUT:-30}" "$@"
