"""WiSE-FT: the models a run saves are the mix of its start and its fine-tuned weights, also across a resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tinymvlm.errors import TmvError
from tinymvlm.models.checkpoint import load_checkpoint, read_metadata
from tinymvlm.training.config import TrainConfig
from tinymvlm.training.trainer import train
from tinymvlm.training.wiseft import START


def _config(tiny_model_config, data: Path, out: Path, **overrides) -> TrainConfig:
    settings = dict(data=str(data), val_data=str(data), model=tiny_model_config, epochs=2, batch_size=4, lr=5e-3,
                    tower_lr=1e-3, warmup_steps=0, workers=0, out_dir=str(out))
    settings.update(overrides)
    return TrainConfig(**settings)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)[0].state_dict()


@pytest.mark.parametrize("alpha", [0.0, 0.4])
def test_saved_models_are_the_mix_and_latest_the_fine_tuned_weights(tiny_model_config, colour_folder, tmp_path, alpha):
    run = train(_config(tiny_model_config, colour_folder, tmp_path / "run", wise_alpha=alpha))
    start, trained = _weights(run / START), _weights(run / "latest.safetensors")
    saved = _weights(run / "epoch_002.safetensors")
    moved = [k for k in start if not torch.equal(start[k], trained[k])]
    assert moved  # training changed the weights, so the mix is not trivially the start
    for name in start:
        assert torch.allclose(saved[name], start[name] + alpha * (trained[name] - start[name]), atol=1e-6), name
    if alpha == 0:
        assert read_metadata(run / "best.safetensors")["fingerprint"] == read_metadata(run / START)["fingerprint"]


def test_a_resumed_run_mixes_with_the_start_it_began_from(tiny_model_config, colour_folder, tmp_path):
    cfg = _config(tiny_model_config, colour_folder, tmp_path / "run", wise_alpha=0.5, epochs=1)
    train(cfg)
    start = read_metadata(tmp_path / "run" / START)["fingerprint"]
    train(_config(tiny_model_config, colour_folder, tmp_path / "run", wise_alpha=0.5, epochs=2, resume="latest"))
    assert read_metadata(tmp_path / "run" / START)["fingerprint"] == start
    begin, trained = _weights(tmp_path / "run" / START), _weights(tmp_path / "run" / "latest.safetensors")
    saved = _weights(tmp_path / "run" / "epoch_002.safetensors")
    for name in begin:
        assert torch.allclose(saved[name], (begin[name] + trained[name]) / 2, atol=1e-6), name


def test_mixing_a_run_that_kept_no_start_is_refused(tiny_model_config, colour_folder, tmp_path):
    train(_config(tiny_model_config, colour_folder, tmp_path / "run", epochs=1, wise_alpha=1))
    with pytest.raises(TmvError, match="no start.safetensors"):
        train(_config(tiny_model_config, colour_folder, tmp_path / "run", wise_alpha=0.5, epochs=2, resume="latest"))
    with pytest.raises(TmvError, match="wise_alpha must be in"):
        _config(tiny_model_config, colour_folder, tmp_path / "x", wise_alpha=1.5)
