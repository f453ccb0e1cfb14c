"""Shared fixtures: tiny random towers (fast) and generated images with captions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers.skip_guard import (  # noqa: F401  (pytest hooks: in CI a skip not allowed fails the run)
    pytest_collectreport,
    pytest_runtest_logreport,
    pytest_sessionfinish,
    pytest_terminal_summary,
)
from tinymvlm import hub

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Property tests: the same examples on every run by default (CI never fails on an input a previous
# run did not try); HYPOTHESIS_PROFILE=explore searches with fresh random inputs, 20 times as many,
# and keeps failures in the local example database.
HYPOTHESIS_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
EXPLORE_FACTOR = 20


def _register_hypothesis_profiles() -> None:
    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True)
    settings.register_profile("explore", derandomize=False, deadline=None)
    if HYPOTHESIS_PROFILE not in ("ci", "explore"):
        raise pytest.UsageError(f"HYPOTHESIS_PROFILE={HYPOTHESIS_PROFILE!r}: use ci or explore")
    settings.load_profile(HYPOTHESIS_PROFILE)


_register_hypothesis_profiles()


def examples(count: int) -> int:
    """A property test's example count under the active profile."""
    return count * EXPLORE_FACTOR if HYPOTHESIS_PROFILE == "explore" else count


@pytest.fixture(scope="session", autouse=True)
def user_cache(tmp_path_factory):
    """The user cache folder (ONNX text encoders, thumbnails) is the session's own, never the real one;
    subprocesses inherit it."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("user-cache")
        patch.setenv("XDG_CACHE_HOME", str(folder))
        yield folder


COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (240, 220, 30),
           "black": (10, 10, 10), "white": (245, 245, 245), "purple": (140, 40, 160), "orange": (250, 140, 20)}


def read_line(stream, timeout: float = 60) -> str:
    """The next line from a child's pipe, stripped, or a failure after `timeout` seconds: a child
    that never answers fails its test instead of hanging the suite."""
    import select

    if not select.select([stream], [], [], timeout)[0]:
        raise AssertionError(f"no line from the child process within {timeout} s")
    return stream.readline().strip()


@pytest.fixture(scope="session")
def builtin_checkpoint(user_cache) -> Path:
    """The built-in model's checkpoint, built once per session."""
    from tinymvlm.models.builtin import builtin_checkpoint

    return builtin_checkpoint()


@pytest.fixture(scope="session")
def tiny_text_model(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT with MiniLM's tokenizer, saved as a Hugging Face folder."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from tinymvlm.models.towers import packaged_text_path

    folder = tmp_path_factory.mktemp("tiny_text")
    tokenizer = AutoTokenizer.from_pretrained(packaged_text_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_config(tiny_text_model):
    from tinymvlm.models.config import ModelConfig

    return ModelConfig(image_model="test_vit", text_model=str(tiny_text_model), pretrained=False,
                       embed_dim=16, image_size=32, context_length=16)


def _untrained_checkpoint(folder: Path, config, seed: int) -> Path:
    import torch

    from tinymvlm.models.checkpoint import save_checkpoint
    from tinymvlm.models.factory import create_model

    torch.manual_seed(seed)
    model, tokenizer = create_model(config)
    path = folder / "model.safetensors"
    save_checkpoint(path, model, tokenizer, {"epoch": 0})
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_model_config) -> Path:
    """A checkpoint of an untrained tiny model (test_vit at 32px + the tiny BERT)."""
    return _untrained_checkpoint(tmp_path_factory.mktemp("ckpt"), tiny_model_config, seed=0)


@pytest.fixture(scope="session")
def other_checkpoint(tmp_path_factory, tiny_model_config) -> Path:
    """The same tiny architecture with different random weights: another model."""
    return _untrained_checkpoint(tmp_path_factory.mktemp("other"), tiny_model_config, seed=1)


def catalogue(folder: Path) -> dict:
    """{path: vector} of every image row of an index, read from one snapshot."""
    from tinymvlm.index.catalog import Catalog
    from tinymvlm.index.store import IndexStore

    catalog = Catalog(IndexStore(folder).catalog_path, readonly=True)
    try:
        with catalog.snapshot():
            ids = catalog.ids("images")
            vecs = catalog.vectors("images", ids, 16)
            labels = catalog.labels("images", ids)
        return {labels[int(i)]: v for i, v in zip(ids, vecs)}
    finally:
        catalog.close()


def make_colour_images(folder: Path, size: int = 48, fmt: str = "png") -> dict[str, str]:
    """One solid-colour image per colour with a sidecar caption; returns {relative path: caption}."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, rgb in COLOURS.items():
        path = folder / f"{name}.{fmt}"
        Image.new("RGB", (size, size), rgb).save(path)
        caption = f"a plain {name} square"
        path.with_suffix(".txt").write_text(caption + "\n", encoding="utf-8")
        out[path.name] = caption
    return out


def noise_images(folder: Path, count: int = 8) -> Path:
    """Random-noise images with captions: unlike solid colours, every random crop of one differs."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(folder / f"noise{i}.png")
        (folder / f"noise{i}.txt").write_text(f"noise picture number {i}\n", encoding="utf-8")
    return folder


@pytest.fixture
def colour_folder(tmp_path) -> Path:
    make_colour_images(tmp_path / "images")
    return tmp_path / "images"


@pytest.fixture
def offline_hub(monkeypatch):
    """The Hugging Face hub cannot be reached (and is not asked: HF_HUB_OFFLINE)."""

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.reachable.cache_clear()
    yield
    hub.reachable.cache_clear()
