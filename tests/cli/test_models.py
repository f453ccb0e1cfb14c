"""Which model a command uses, said once on stderr with the reason; `tmv models` lists what can be used."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from tinymvlm.cli.main import cli

from helpers.pretrained_models import save_hf_clip


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """An empty working folder with photos, no $TMV_RUNS (so ./runs counts) and its own index and cache."""
    from conftest import make_colour_images

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TMV_RUNS", raising=False)
    monkeypatch.setenv("TMV_INDEX", str(tmp_path / "index"))
    make_colour_images(tmp_path / "photos")
    return tmp_path


def _run_with_metrics(run: Path, config, epoch: int, metrics: dict) -> Path:
    """A run folder as training leaves it: best and latest checkpoints with the best epoch's metrics."""
    from tinymvlm.models.checkpoint import save_checkpoint
    from tinymvlm.models.factory import create_model

    model, tokenizer = create_model(config)
    save_checkpoint(run / "best.safetensors", model, tokenizer, {"epoch": epoch, "metrics": metrics})
    shutil.copy(run / "best.safetensors", run / "latest.safetensors")
    return run


def _model_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("model: ")]


def test_index_names_the_latest_run_in_runs_once(workdir, tiny_model_config):
    _run_with_metrics(workdir / "runs" / "tux", tiny_model_config, 2, {"t2i_R@1": 40.0})
    result = CliRunner().invoke(cli, ["index", "./photos", "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert _model_lines(result.stderr) == [
        "model: runs/tux/best.safetensors (latest run in ./runs); --model picks another, 'tmv models' lists all"]
    searched = CliRunner().invoke(cli, ["search", "red", "-k", "1"])
    assert searched.exit_code == 0, searched.output
    assert _model_lines(searched.stderr) == ["model: runs/tux/best.safetensors (index was built with it)"]
    quiet = CliRunner().invoke(cli, ["search", "red", "-k", "1", "-q"])
    assert quiet.exit_code == 0 and quiet.stderr == "" and quiet.stdout == searched.stdout


def test_index_in_an_empty_folder_names_the_builtin_model_and_the_alternative_once(workdir, builtin_checkpoint):
    result = CliRunner().invoke(cli, ["index", "./photos", "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert _model_lines(result.stderr) == [
        "model: builtin (built-in: no run found in ./runs); for folders full of people: "
        "--model hf:openai/clip-vit-base-patch32; 'tmv models' lists all"]


def test_a_given_model_is_named_as_given(workdir, tiny_checkpoint):
    result = CliRunner().invoke(cli, ["score", "photos/red.png", "--captions", "a red square", "--model", str(tiny_checkpoint)])
    assert result.exit_code == 0, result.output
    assert _model_lines(result.stderr) == [f"model: {tiny_checkpoint} (--model)"]


def test_models_json_lists_builtin_runs_imports_and_recommended(workdir, tiny_model_config, monkeypatch):
    from tinymvlm.models.resolve import resolve_model

    monkeypatch.setenv("XDG_CACHE_HOME", str(workdir / "cache"))
    _run_with_metrics(workdir / "runs" / "tux", tiny_model_config, 3, {"t2i_R@1": 40.0, "i2t_R@1": 55.5})
    clip = save_hf_clip(workdir / "tiny-clip")
    imported = resolve_model(f"hf:{clip}")
    result = CliRunner().invoke(cli, ["models", "--json"])
    assert result.exit_code == 0, result.output
    listing = json.loads(result.stdout)
    local = {m["kind"]: m for m in listing["local"]}
    assert local["builtin"]["ref"] == "builtin" and local["builtin"]["default"] is False
    assert local["builtin"]["path"] is None  # not built in this cache: it is on first use
    run = local["run"]
    assert (run["ref"], run["epoch"], run["metrics"], run["default"]) == (
        "runs/tux", 3, {"t2i_R@1": 40.0, "i2t_R@1": 55.5}, True)
    assert run["size_bytes"] == (workdir / "runs" / "tux" / "best.safetensors").stat().st_size
    assert (local["imported"]["ref"], local["imported"]["path"]) == (f"hf:{clip}", str(imported))
    assert local["imported"]["size_bytes"] == imported.stat().st_size
    published = {m["ref"]: (m["t2i_r1"], m["i2t_r1"]) for m in listing["recommended"]}
    assert published["hf:openai/clip-vit-base-patch32"] == (58.8, 78.9)  # CLIP paper, Flickr30k zero-shot
    assert published["hf:google/siglip-base-patch16-224"] == (74.7, 89.1)
    assert len(published) >= 3
    table = CliRunner().invoke(cli, ["models"])
    assert table.exit_code == 0 and "runs/tux" in table.stdout and "hf:openai/clip-vit-base-patch32" in table.stdout
