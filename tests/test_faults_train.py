"""Fault suite, `tmv train`: a real SIGKILL mid-epoch, then `--resume latest`.

That a resumed run replays the remaining steps exactly as an uninterrupted one (losses and weights) is
tests/test_train.py::test_resume_after_an_interruption_reproduces_the_uninterrupted_losses, with a simulated
interruption; here the process really dies, the resumed run must take exactly the uninterrupted run's steps,
and every file the killed process left must be whole.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tinymvlm.checkpoint import load_checkpoint, read_metadata
from tinymvlm.cli.main import cli

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


def test_sigkilled_training_resumes_from_its_last_checkpoint(pairs_folder, tmp_path, tiny_model_config):
    flags = ["--data", str(pairs_folder), "--val-fraction", "0", "--batch-size", str(BATCH), "--epochs", str(EPOCHS),
             "--warmup-steps", "2", "--image-model", tiny_model_config.image_model, "--text-model",
             tiny_model_config.text_model, "--no-pretrained", "--embed-dim", "16", "--image-size", "32",
             "--workers", "0", "--device", "cpu"]
    run = tmp_path / "run"
    with open(tmp_path / "train.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "tinymvlm.cli", "train", *flags, "--out-dir", str(run)],
                                stdout=log, stderr=log, cwd=tmp_path)
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            records = _records(run)
            epochs_done = [r for r in records if r["type"] == "epoch"]
            if epochs_done and records[-1]["type"] == "step" and records[-1]["epoch"] == 2:
                break  # the first checkpoint is written and epoch 2 is under way
            time.sleep(0.005)
        assert proc.poll() is None, (tmp_path / "train.log").read_text(errors="replace")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    killed_after = _records(run)[-1]["step"]
    state = read_metadata(run / "latest.safetensors")["trainer_state"]
    assert state["epoch"] == 1 and state["step"] < killed_after  # the checkpoint predates the kill

    result = CliRunner().invoke(cli, ["train", "--resume", "latest", "--out-dir", str(run)])
    assert result.exit_code == 0, result.output
    resumed = _records(run)  # the log is cut back to the checkpoint, then continues from it
    steps = [r["step"] for r in resumed if r["type"] == "step"]
    assert steps == list(range(1, STEPS_PER_EPOCH * EPOCHS + 1))
    assert [r["epoch"] for r in resumed if r["type"] == "epoch"] == list(range(1, EPOCHS + 1))
    # nothing half-written: every checkpoint loads, no temp file is left behind
    checkpoints = sorted(p.name for p in run.glob("*.safetensors"))
    assert checkpoints == ["best.safetensors"] + [f"epoch_{e:03d}.safetensors" for e in range(1, EPOCHS + 1)] + [
        "latest.safetensors", "start.safetensors"]
    for name in checkpoints:
        load_checkpoint(run / name)
    assert read_metadata(run / "latest.safetensors")["trainer_state"]["step"] == STEPS_PER_EPOCH * EPOCHS
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
