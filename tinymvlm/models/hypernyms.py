"""What each ImageNet class is a kind of (WordNet 3.0 hypernyms), shipped as package data.

A photo of a Pekinese is a photo of a dog, but "a photo of a Pekinese." sits in MiniLM's space nearer
to cat breeds than to "a dog", so the label prior's class rows alone leave everyday words ("a dog", "a
boat", "food") far from the photos they describe. Each row therefore mixes in its parents' and
grandparents' names (see `factory.build_label_prior`). The table (imagenet_hypernyms.tsv, WordNet's
licence at its head) is generated once by examples/make_imagenet_hypernyms.py, so users need no WordNet.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

TABLE = "imagenet_hypernyms.tsv"
# Weight of each ancestor depth's names relative to the class name's 1 (measured on real photos, see
# docs/builtin-model.md): parents a little less than the name, grandparents a little (version 2 had
# 1.0 and 0.3: everyday queries ranked about as well, captions and drawings were read worse).
DEPTH_WEIGHTS = {1: 0.7, 2: 0.2}


@cache
def imagenet_ancestors() -> dict[str, tuple[tuple[str, ...], ...]]:
    """{ImageNet synset id: (parent names, grandparent names)} for the 1000 ImageNet-1k classes."""
    table: dict[str, tuple[tuple[str, ...], ...]] = {}
    for line in files("tinymvlm.models").joinpath(TABLE).read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        synset, _name, *levels = line.split("\t")
        table[synset] = tuple(tuple(n for n in level.split(";") if n) for level in levels)
    return table


def weighted_names(name: str, levels: tuple[tuple[str, ...], ...],
                   weights: dict[int, float]) -> list[tuple[str, float]]:
    """(name, weight) pairs a class row averages: its own name at 1, each ancestor at its depth's weight,
    normalised to sum to one."""
    pairs = [(name, 1.0)] + [(ancestor, weights.get(depth, 0.0)) for depth, level in enumerate(levels, 1)
                             for ancestor in level]
    pairs = [(text, w) for text, w in pairs if w > 0]
    total = sum(w for _, w in pairs)
    return [(text, w / total) for text, w in pairs]
