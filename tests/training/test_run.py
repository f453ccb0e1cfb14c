"""The run folder: resuming from Python with the run's own options, exactly as `tmv train --resume`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from tinymvlm.cli.main import cli

from tinymvlm.errors import TmvError
from tinymvlm.run_folder import MetricsLog
from tinymvlm.training.config import TrainConfig
from tinymvlm.training.run_config import resumed_config
from tinymvlm.training.trainer import Reporter, train


class _StopAfterEpoch(Reporter):
    def epoch_end(self, record) -> None:
        if record["epoch"] == 1:
            raise KeyboardInterrupt


def _losses(run: Path) -> list[float]:
    return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["type"] == "step"]


def _interrupted_run(tiny_model_config, data: Path, out: Path) -> dict:
    """A run of non-default options stopped after its first epoch; returns its saved config."""
    cfg = TrainConfig(data=str(data), val_fraction=0.25, model=tiny_model_config, epochs=3, batch_size=2, lr=5e-3,
                      warmup_steps=0, workers=0, out_dir=str(out), seed=7)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, _StopAfterEpoch())
    return yaml.safe_load((out / "config.yaml").read_text())


def test_resume_from_python_uses_the_runs_own_options_as_the_cli_does(tiny_model_config, colour_folder, tmp_path):
    saved = _interrupted_run(tiny_model_config, colour_folder, tmp_path / "py")
    _interrupted_run(tiny_model_config, colour_folder, tmp_path / "cli")

    train(TrainConfig(resume="latest", out_dir=str(tmp_path / "py")))
    result = CliRunner().invoke(cli, ["train", "--resume", "latest", "--out-dir", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output

    assert yaml.safe_load((tmp_path / "py" / "config.yaml").read_text()) == saved  # not overwritten with defaults
    assert _losses(tmp_path / "py") == _losses(tmp_path / "cli")
    assert len(_losses(tmp_path / "py")) == 3 * 3  # 6 training images, batch 2, 3 epochs


def test_options_given_on_resume_override_the_runs_own(tiny_model_config, colour_folder, tmp_path):
    run = tmp_path / "run"
    _interrupted_run(tiny_model_config, colour_folder, run)
    resumed = resumed_config(TrainConfig(resume="latest", out_dir=str(run), epochs=5))
    assert (resumed.epochs, resumed.batch_size, resumed.seed, resumed.data) == (5, 2, 7, str(colour_folder))
    # a value equal to the default overrides too, when named as given (the CLI names the flags it got)
    assert resumed_config(TrainConfig(resume="latest", out_dir=str(run), epochs=10), given=["epochs"]).epochs == 10
    assert resumed_config(TrainConfig(resume="latest", out_dir=str(run), epochs=10)).epochs == 3


def test_resume_needs_a_run_folder_and_its_latest_checkpoint(tmp_path):
    with pytest.raises(TmvError, match="--resume latest needs --out-dir"):
        resumed_config(TrainConfig(resume="latest"))
    with pytest.raises(TmvError, match="cannot resume: .*latest.safetensors does not exist"):
        resumed_config(TrainConfig(resume="latest", out_dir=str(tmp_path)))


def test_the_metrics_log_is_cut_back_to_a_checkpoint(tmp_path):
    log = MetricsLog(tmp_path)
    for step in (1, 2, 3):
        log.append({"type": "step", "step": step})
    log.append({"type": "epoch", "step": 3}, sync=True)
    log.truncate(2)
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]
