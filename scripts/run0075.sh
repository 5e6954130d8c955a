#!/usr/bin/env bash
# run0075: GreedyHash-unsupervised, CIFAR-10, 64 bits. Usage: bash scripts/run0075.sh GPU_ID [extra flags]
# Trains into checkpoints/run0075 (or --workdir=...), then evaluates its codes (Hamming, mAP@1000).
set -euo pipefail
cd "$(dirname "$0")/.."
gpu="${1:?usage: bash scripts/run0075.sh GPU_ID [extra flags]}"
shift
python="${PYTHON:-python}"
workdir=checkpoints/run0075
for arg in "$@"; do
  case "$arg" in --workdir=*) workdir="${arg#--workdir=}" ;; esac
done
"$python" -m wsdhash.train --flagfile=scripts/flags/run0075.flags --gpu="$gpu" "$@"
"$python" -m wsdhash.evaluate --codes="$workdir/codes.h5" --topk=1000 --empty=zero
