"""Fault suite, `tmv train`: a real SIGKILL inside a checkpoint save (after epoch 2's steps were
logged), then `--resume latest`.

That a resumed run replays the remaining steps exactly as an uninterrupted one (losses and weights) is
also tests/training/test_train.py::test_resume_after_an_interruption_reproduces_the_uninterrupted_losses, with a
simulated interruption; here the process really dies, the resumed run must take exactly the
uninterrupted run's steps, and every file the killed process left must be whole.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from tinymvlm.cli.main import cli

from tinymvlm.models.checkpoint import load_checkpoint, read_metadata

EPOCHS = 2
IMAGES, BATCH = 12, 4
STEPS_PER_EPOCH = IMAGES // BATCH  # what an uninterrupted run takes: no partial batch


def _records(run: Path) -> list[dict]:
    text = (run / "metrics.jsonl").read_text(encoding="utf-8") if (run / "metrics.jsonl").exists() else ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def pairs_folder(tmp_path) -> Path:
    """Small noise images with sidecar captions."""
    folder = tmp_path / "data"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(IMAGES):
        Image.fromarray((rng.random((24, 24, 3)) * 255).astype(np.uint8)).save(folder / f"img{i:02d}.png")
        (folder / f"img{i:02d}.txt").write_text(f"picture number {i}\n", encoding="utf-8")
    return folder


def _tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    from tinymvlm.models.checkpoint import STATE_PREFIX

    return {k: v for k, v in load_file(path).items() if not k.startswith(STATE_PREFIX + "rng")}


def test_a_kill_inside_a_checkpoint_save_leaves_whole_files_and_resumes_as_if_uninterrupted(
        pairs_folder, tmp_path, tiny_model_config):
    """SIGKILL at the one moment a torn checkpoint could appear: epoch 2's latest.safetensors written
    to its temp file, not yet renamed (TMV_KILL_AT, a kill point reached by event). Every checkpoint
    that exists loads, the temp file is the only trace, and the resumed run takes the uninterrupted
    run's steps to the same weights."""
    flags = ["--data", str(pairs_folder), "--val-fraction", "0", "--batch-size", str(BATCH), "--epochs", str(EPOCHS),
             "--warmup-steps", "2", "--image-model", tiny_model_config.image_model, "--text-model",
             tiny_model_config.text_model, "--no-pretrained", "--embed-dim", "16", "--image-size", "32",
             "--workers", "0", "--device", "cpu", "--precision", "fp32", "--no-lock-image"]
    whole = tmp_path / "whole"
    result = CliRunner().invoke(cli, ["train", *flags, "--out-dir", str(whole)])
    assert result.exit_code == 0, result.output

    run = tmp_path / "run"
    env = {**os.environ, "TMV_KILL_AT": "latest.safetensors#2"}
    killed = subprocess.run([sys.executable, "-m", "tinymvlm.cli", "train", *flags, "--out-dir", str(run)],
                            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    temps = [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    assert len(temps) == 1 and temps[0].startswith(".latest.safetensors."), temps  # killed inside that save
    for path in run.glob("*.safetensors"):  # epoch 2's own and best checkpoints were written before it
        load_checkpoint(path)
    assert read_metadata(run / "latest.safetensors")["trainer_state"]["epoch"] == 1
    assert read_metadata(run / "epoch_002.safetensors")["info"]["epoch"] == 2

    result = CliRunner().invoke(cli, ["train", "--resume", "latest", "--out-dir", str(run)])
    assert result.exit_code == 0, result.output
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    steps = lambda folder: [r["loss"] for r in _records(folder) if r["type"] == "step"]  # noqa: E731
    assert len(steps(run)) == STEPS_PER_EPOCH * EPOCHS
    assert steps(run) == pytest.approx(steps(whole), abs=1e-6)
    for name in ("latest.safetensors", "epoch_002.safetensors", "best.safetensors"):
        got, expected = _tensors(run / name), _tensors(whole / name)
        assert got.keys() == expected.keys()
        assert max((got[k].double() - expected[k].double()).abs().max().item() for k in got) < 1e-5, name
