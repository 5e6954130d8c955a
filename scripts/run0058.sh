#!/usr/bin/env bash
# run0058: ADSH on NUS-WIDE-21, 48 bits. Usage: bash scripts/run0058.sh GPU_ID [extra flags]
# Trains into checkpoints/run0058 (or --workdir=...), then evaluates its codes (Hamming).
set -euo pipefail
cd "$(dirname "$0")/.."
gpu="${1:?usage: bash scripts/run0058.sh GPU_ID [extra flags]}"
shift
python="${PYTHON:-python}"
workdir=checkpoints/run0058
for arg in "$@"; do
  case "$arg" in --workdir=*) workdir="${arg#--workdir=}" ;; esac
done
"$python" -m wsdhash.train --flagfile=scripts/flags/run0058.flags --gpu="$gpu" "$@"
"$python" -m wsdhash.evaluate --codes="$workdir/codes.h5" --topk=5000 --empty=zero
