#!/usr/bin/env bash
# run0061: DPN on CIFAR-10, 64 bits. Usage: bash scripts/run0061.sh GPU_ID [extra flags]
# Trains into checkpoints/run0061 (or --workdir=...), then evaluates its codes (Hamming).
set -euo pipefail
cd "$(dirname "$0")/.."
gpu="${1:?usage: bash scripts/run0061.sh GPU_ID [extra flags]}"
shift
python="${PYTHON:-python}"
workdir=checkpoints/run0061
for arg in "$@"; do
  case "$arg" in --workdir=*) workdir="${arg#--workdir=}" ;; esac
done
"$python" -m wsdhash.train --flagfile=scripts/flags/run0061.flags --gpu="$gpu" "$@"
"$python" -m wsdhash.evaluate --codes="$workdir/codes.h5" --topk=all --empty=zero
