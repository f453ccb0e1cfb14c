#!/usr/bin/env bash
# The whole chain on real data, offline: install into ./.venv, search the 152 held-out Tux Paint stamps
# with the built-in model (no training), then train on the 633 others (choosing the best epoch on a
# validation split taken from those), index the held-out stamps, search them, and evaluate retrieval.
set -euo pipefail
cd "$(dirname "$0")/.."
bash examples/setup.sh
python=.venv/bin/python
tmv() { "$python" -m tinymvlm.cli "$@"; }

"$python" examples/tuxpaint_pairs.py data/tux

echo "== no training: the built-in model"
tmv index data/tux/test-images --model builtin --index runs/builtin-index
tmv search "a red apple" --index runs/builtin-index -k 3

tmv train --config examples/tuxpaint.yaml --data data/tux/train.tsv --val-fraction 0.1 --out-dir runs/tux
tmv index data/tux/test-images --model runs/tux --index runs/tux/index
tmv index --captions data/tux/test.tsv --caption-column caption --index runs/tux/index

for query in "a red apple" "a penguin" "a car"; do
  echo "== text -> image: $query"
  tmv search "$query" --index runs/tux/index -k 3
done
example=$(head -2 data/tux/test.tsv | tail -1 | cut -f1)
echo "== image -> text: $example"
tmv search --image "$example" --texts --index runs/tux/index -k 3

echo "== held-out retrieval (152 stamps neither trained on nor used to choose the checkpoint)"
tmv eval --model runs/tux --data data/tux/test.tsv --recall 1 5 10

echo "== browse the held-out index in a web page (Ctrl-C stops it):"
echo "  source .venv/bin/activate && tmv serve --index runs/tux/index     # then open http://127.0.0.1:8000/"
