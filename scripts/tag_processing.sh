#!/usr/bin/env bash
# WSDHQ tag processing: writes FinalTagEmbs.txt and TagIdMergeMap.json for a dataset.
#
# Usage: bash scripts/tag_processing.sh DATASET_DIR VECTORS [OUTPUT_DIR] [extra flags...]
#   DATASET_DIR  holds train_tag.txt and the raw vocabulary (tag_vocab.txt,
#                common_tags.txt or TagList1k.txt, the first found)
#   VECTORS      word-vectors file (e.g. GoogleNews-vectors-negative300.bin.gz),
#                'train' or 'glove-6b-50d'
#   OUTPUT_DIR   default DATASET_DIR/tags
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: $0 DATASET_DIR VECTORS [OUTPUT_DIR] [extra flags...]" >&2
  exit 2
fi
dataset_dir=$1
vectors=$2
output_dir=${3:-$dataset_dir/tags}
shift $(( $# < 3 ? $# : 3 ))

vocab=""
for name in tag_vocab.txt common_tags.txt TagList1k.txt; do
  if [[ -f "$dataset_dir/$name" ]]; then vocab=$dataset_dir/$name; break; fi
done
if [[ -z $vocab ]]; then
  echo "error: no tag_vocab.txt, common_tags.txt or TagList1k.txt in $dataset_dir" >&2
  exit 2
fi

exec "${PYTHON:-python}" -m wsdhash.tags \
  --vocab="$vocab" \
  --tag_matrix="$dataset_dir/train_tag.txt" \
  --vectors="$vectors" \
  --output_dir="$output_dir" \
  "$@"
