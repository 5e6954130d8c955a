#!/usr/bin/env bash
# run0026: OrthoHash on ImageNet100, 16 bits. Usage: bash scripts/run0026.sh GPU_ID [extra flags]
# Trains into checkpoints/run0026 (or --workdir=...), then evaluates its codes (Hamming).
set -euo pipefail
cd "$(dirname "$0")/.."
gpu="${1:?usage: bash scripts/run0026.sh GPU_ID [extra flags]}"
shift
python="${PYTHON:-python}"
workdir=checkpoints/run0026
for arg in "$@"; do
  case "$arg" in --workdir=*) workdir="${arg#--workdir=}" ;; esac
done
"$python" -m wsdhash.train --flagfile=scripts/flags/run0026.flags --gpu="$gpu" "$@"
"$python" -m wsdhash.evaluate --codes="$workdir/codes.h5" --topk=1000 --empty=zero
