"""Checkpoints rebuild the model on their own, and nothing but safetensors is ever read."""

from __future__ import annotations

import os
import pickle
import time

import pytest
import torch
from PIL import Image

import tinymvlm
from tinymvlm.errors import TmvError
from tinymvlm.models.checkpoint import load_checkpoint, read_metadata
from tinymvlm.models.resolve import resolve_model


def test_load_returns_model_preprocess_tokenizer_that_embed(tiny_checkpoint):
    model, preprocess, tokenizer = tinymvlm.load(tiny_checkpoint)
    pixels = preprocess(Image.new("RGB", (50, 40), (200, 10, 10)))[None]
    batch = tokenizer(["a red square", "a cat"], padding=True, return_tensors="pt")
    with torch.no_grad():
        image = model.encode_image(pixels)
        text = model.encode_text(batch["input_ids"], batch["attention_mask"])
    assert pixels.shape == (1, 3, 32, 32)
    assert image.shape == (1, 16) and text.shape == (2, 16)
    assert torch.allclose(image.norm(dim=-1), torch.ones(1)) and torch.allclose(text.norm(dim=-1), torch.ones(2))


def test_round_trip_keeps_weights_config_and_fingerprint(tiny_checkpoint, tmp_path):
    from tinymvlm.models.checkpoint import fingerprint, save_checkpoint

    model, tokenizer, meta = load_checkpoint(tiny_checkpoint)
    assert fingerprint(model) == meta["fingerprint"]
    assert meta["model_config"]["image_model"] == "test_vit"
    save_checkpoint(tmp_path / "again.safetensors", model, tokenizer)
    again, _, meta2 = load_checkpoint(tmp_path / "again.safetensors")
    assert meta2["fingerprint"] == meta["fingerprint"]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_logit_scale_starts_where_configured_and_is_clamped_at_100(tiny_checkpoint, tiny_model_config):
    from dataclasses import replace

    from tinymvlm.errors import TmvError
    from tinymvlm.models.factory import create_model

    model, _, _ = load_checkpoint(tiny_checkpoint)
    assert float(model.scale().detach()) == pytest.approx(7.0, rel=1e-5)
    clip_like, _ = create_model(replace(tiny_model_config, init_logit_scale=1 / 0.07))
    assert float(clip_like.scale().detach()) == pytest.approx(1 / 0.07, rel=1e-5)
    with pytest.raises(TmvError, match="init_logit_scale"):
        replace(tiny_model_config, init_logit_scale=0.5)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    model.clamp_logit_scale()
    assert float(model.scale().detach()) == pytest.approx(100.0, rel=1e-5)


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_posing_as_a_checkpoint_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    fake = tmp_path / "best.safetensors"
    fake.write_bytes(pickle.dumps({"state_dict": _Payload(str(marker))}))
    with pytest.raises(TmvError, match="not a tinymvlm checkpoint"):
        tinymvlm.load(fake)
    assert not marker.exists()


def test_other_safetensors_files_are_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "w.safetensors"))
    with pytest.raises(TmvError, match="not a tinymvlm checkpoint"):
        read_metadata(tmp_path / "w.safetensors")


def test_checkpoint_resolution_rules(tiny_checkpoint, builtin_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("TMV_RUNS", str(tmp_path / "runs"))
    monkeypatch.chdir(tmp_path)
    assert resolve_model(None) == builtin_checkpoint  # no run: the built-in model
    assert resolve_model("builtin") == builtin_checkpoint
    (tmp_path / "builtin").mkdir()  # a run folder of that name is the run folder
    with pytest.raises(TmvError, match="neither a tmv run folder"):
        resolve_model("builtin")
    old, new = tmp_path / "runs" / "old", tmp_path / "runs" / "new"
    for run in (old, new):
        run.mkdir(parents=True)
        for name in ("latest.safetensors", "best.safetensors"):
            (run / name).write_bytes(tiny_checkpoint.read_bytes())
    past = time.time() - 100
    os.utime(old / "latest.safetensors", (past, past))
    assert resolve_model(None) == new / "best.safetensors"
    assert resolve_model(old) == old / "best.safetensors"
    assert resolve_model(old / "latest.safetensors") == old / "latest.safetensors"
    with pytest.raises(TmvError, match="does not exist"):
        resolve_model(tmp_path / "nope.safetensors")
