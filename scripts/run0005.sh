#!/usr/bin/env bash
# run0005: WSDHQ on nuswide, 8 bits. Usage: bash scripts/run0005.sh GPU_ID [extra flags]
# Trains into checkpoints/run0005 (or --workdir=...), then evaluates its codes by AQD.
set -euo pipefail
cd "$(dirname "$0")/.."
gpu="${1:?usage: bash scripts/run0005.sh GPU_ID [extra flags]}"
shift
python="${PYTHON:-python}"
workdir=checkpoints/run0005
for arg in "$@"; do
  case "$arg" in --workdir=*) workdir="${arg#--workdir=}" ;; esac
done
"$python" -m wsdhash.train --flagfile=scripts/flags/run0005.flags --gpu="$gpu" "$@"
"$python" -m wsdhash.evaluate --codes="$workdir/codes.h5" --topk=5000 --empty=skip
