"""Version 2 of the built-in model: each class row also says what the class is a kind of (WordNet
parents and grandparents), so everyday words ("a dog") reach the breeds the classifier names; built
offline from what ships in the package, to the same fingerprint every time."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
import torch.nn.functional as F

from tinymvlm.models.builtin import VERSION
from tinymvlm.models.checkpoint import load_checkpoint, read_metadata
from tinymvlm.models.hypernyms import DEPTH_WEIGHTS, imagenet_ancestors, weighted_names
from tinymvlm.models.tokenizer import tokenize

PEKINESE = 154  # ImageNet-1k index of n02086079


def test_the_shipped_table_says_a_pekinese_is_a_dog_and_carries_wordnets_notice():
    from importlib.resources import files

    table = imagenet_ancestors()
    assert len(table) == 1000
    assert table["n02086079"] == (("toy dog",), ("dog",))
    assert table["n04350905"] == (("garment",), ("clothing",))
    text = files("tinymvlm.models").joinpath("imagenet_hypernyms.tsv").read_text(encoding="utf-8")
    assert "WordNet 3.0 Copyright 2006 by Princeton University." in text


def test_a_row_mixes_its_name_and_ancestors_at_the_depth_weights():
    import pytest

    mix = dict(weighted_names("Pekinese", (("toy dog",), ("dog", "pet")), {1: 1.0, 2: 0.3}))
    assert mix == pytest.approx({"Pekinese": 1 / 2.6, "toy dog": 1 / 2.6, "dog": 0.3 / 2.6, "pet": 0.3 / 2.6})
    assert dict(weighted_names("Pekinese", (("toy dog",),), {})) == {"Pekinese": 1.0}


def test_a_dog_breed_reads_as_a_dog(builtin_checkpoint):
    """The Pekinese row is nearer "a photo of a dog." than the name alone (version 1's row) is."""
    model, tokenizer, meta = load_checkpoint(builtin_checkpoint)
    assert meta["info"]["version"] == VERSION == 3
    assert meta["info"]["hypernyms"] == {str(d): w for d, w in DEPTH_WEIGHTS.items()}
    texts = ["a photo of a Pekinese.", "a photo of a toy dog.", "a photo of a dog.", "a photo of a cat."]
    batch = tokenize(tokenizer, texts, model.config.context_length)
    with torch.no_grad():
        name, toy_dog, dog, cat = model.text_features(batch["input_ids"], batch["attention_mask"]).float()
    row = model.label_prior.label_text[PEKINESE]
    expected = (name + 0.7 * toy_dog + 0.2 * dog) / 1.9
    assert torch.allclose(row, expected.half().float(), atol=2e-3)
    assert F.cosine_similarity(row, dog, dim=0) > F.cosine_similarity(name, dog, dim=0) + 0.05
    assert F.cosine_similarity(row, dog, dim=0) > F.cosine_similarity(row, cat, dim=0)


def test_an_offline_rebuild_in_a_fresh_cache_gives_the_same_fingerprint(builtin_checkpoint, tmp_path):
    """A new process with the hub switched off and an empty cache builds the same model."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "XDG_CACHE_HOME": str(tmp_path),
           "HF_HOME": str(tmp_path / "hf")}
    code = ("import json; from tinymvlm.models.builtin import builtin_checkpoint; "
            "from tinymvlm.models.checkpoint import read_metadata; "
            "print(json.dumps(read_metadata(builtin_checkpoint())['fingerprint']))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == read_metadata(builtin_checkpoint)["fingerprint"]
    assert (tmp_path / "tinymvlm").is_dir()
