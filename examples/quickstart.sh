#!/usr/bin/env bash
# The whole chain on real data, offline: install, train on 633 Tux Paint stamps, index the 152
# held-out stamps, search them, and evaluate retrieval on them.
set -euo pipefail
cd "$(dirname "$0")/.."
tmv() { python3 -m tinymvlm.cli "$@"; }

bash examples/setup.sh
python3 examples/tuxpaint_pairs.py data/tux

tmv train --config examples/tuxpaint.yaml --data data/tux/train.tsv --val-data data/tux/test.tsv --out-dir runs/tux
tmv index data/tux/test-images --checkpoint runs/tux --index runs/tux/index
tmv index --captions data/tux/test.tsv --caption-column caption --index runs/tux/index

for query in "a red apple" "a penguin" "a car"; do
  echo "== text -> image: $query"
  tmv search "$query" --index runs/tux/index -k 3
done
example=$(head -2 data/tux/test.tsv | tail -1 | cut -f1)
echo "== image -> text: $example"
tmv search --image "$example" --texts --index runs/tux/index -k 3

echo "== held-out retrieval"
tmv eval --recall 1 5 10

echo "== browse the held-out index in a web page (Ctrl-C stops it):"
echo "tmv serve --index runs/tux/index     # then open http://127.0.0.1:8000/"
