"""The built-in model: exactly the centred class reading, built deterministically into the user cache,
and what every command falls back to when there is no trained run."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from tinymvlm.cli.main import cli

from tinymvlm.models.builtin import NAME, builtin_path
from tinymvlm.models.checkpoint import load_checkpoint, read_metadata
from tinymvlm.models.tokenizer import tokenize


@pytest.fixture(scope="module")
def builtin_model(builtin_checkpoint):
    model, tokenizer, meta = load_checkpoint(builtin_checkpoint)
    return model, tokenizer, meta


def test_the_model_is_the_centred_class_reading(builtin_model):
    model, tokenizer, meta = builtin_model
    assert meta["info"]["model"] == NAME and meta["info"]["version"] >= 1
    prior = model.label_prior
    features = torch.randn(3, model.image_tower.num_features, generator=torch.Generator().manual_seed(0))
    probs = (prior.classifier(features)).softmax(-1)
    centre = prior.label_text.mean(0)
    expected = torch.nn.functional.normalize(probs @ prior.label_text - centre, dim=-1)
    no_face = torch.zeros(3, 1)  # the found-face column (tests/models/test_people.py)
    assert torch.allclose(model.project_image(torch.cat([features, no_face], 1)), expected, atol=1e-5)
    batch = tokenize(tokenizer, ["a photo of a dog", "a cat"], model.config.context_length)
    with torch.no_grad():
        raw = model.text_features(batch["input_ids"], batch["attention_mask"])
        emb = model.encode_text(batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(emb, torch.nn.functional.normalize(raw - centre, dim=-1), atol=1e-5)


def test_a_rebuild_gives_the_same_fingerprint(builtin_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    from tinymvlm.models.builtin import builtin_checkpoint as build

    rebuilt = build()
    assert rebuilt == builtin_path() and rebuilt.parent.parent == tmp_path / "tinymvlm"
    assert read_metadata(rebuilt)["fingerprint"] == read_metadata(builtin_checkpoint)["fingerprint"]
    assert not list(rebuilt.parent.glob(".*.tmp"))


def test_the_reading_names_a_real_photo(builtin_model):
    """skimage's cat photo is nearer "a photo of a cat" than to other captions."""
    skimage_data = pytest.importorskip("skimage.data")
    from tinymvlm.data.transform import Preprocess

    model, tokenizer, _ = builtin_model
    image = Preprocess(model.data_config)(Image.fromarray(skimage_data.chelsea())).unsqueeze(0)
    captions = ["a photo of a cat", "a photo of a rocket", "a photo of a wall clock", "a photo of coins"]
    batch = tokenize(tokenizer, captions, model.config.context_length)
    with torch.no_grad():
        scores = model.encode_image(image) @ model.encode_text(batch["input_ids"], batch["attention_mask"]).T
    assert int(scores.argmax()) == 0


def test_index_then_search_with_no_run_and_no_flags(builtin_checkpoint, tmp_path, monkeypatch):
    """`tmv index ./photos && tmv search "a dog"` in an empty folder, right after install."""
    skimage_data = pytest.importorskip("skimage.data")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMV_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("TMV_INDEX", str(tmp_path / "default-index"))
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("chelsea", "rocket", "coffee", "clock"):
        Image.fromarray(getattr(skimage_data, name)()).convert("RGB").save(photos / f"{name}.jpg")
    runner = CliRunner()
    indexed = runner.invoke(cli, ["index", "./photos", "--workers", "0"])
    assert indexed.exit_code == 0, indexed.output
    assert indexed.stderr.count("model: ") == 1  # one line names the model, why, and what else to use
    assert f"model: {NAME} (built-in: no run found in {tmp_path / 'runs'}); for folders full of people: --model hf:" in indexed.stderr
    manifest = __import__("json").loads((tmp_path / "default-index" / "manifest.json").read_text())
    assert manifest["model"]["fingerprint"] == read_metadata(builtin_checkpoint)["fingerprint"]
    found = runner.invoke(cli, ["search", "a cat", "--paths-only", "-k", "1"])
    assert found.exit_code == 0, found.output
    assert found.stdout.strip().endswith("chelsea.jpg")
    assert found.stderr.count("model: ") == 1
    assert f"model: {NAME} (index was built with it); for folders full of people: tmv index --rebuild --model hf:" in found.stderr
    rocket = runner.invoke(cli, ["search", "a photo of a rocket", "--paths-only", "-k", "1"])
    assert rocket.stdout.strip().endswith("rocket.jpg"), rocket.output
