"""Multi-process training (torchrun, DDP, gloo on CPU) matches one process with the global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import noise_images
from tinymvlm.cli.main import cli

from tinymvlm.errors import TmvError
from tinymvlm.models.checkpoint import STATE_PREFIX
from tinymvlm.models.config import ModelConfig
from tinymvlm.training.config import TrainConfig
from tinymvlm.training.loss import contrastive_loss, local_contrastive_loss
from tinymvlm.training.trainer import train

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")


@pytest.fixture(scope="module")
def model_config(tmp_path_factory) -> ModelConfig:
    """test_vit (LayerNorm: no batch statistics) and a tiny BERT without dropout, so that B pairs
    on each of 2 ranks and 2B pairs in one process compute the same thing."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from tinymvlm.models.towers import packaged_text_path

    folder = tmp_path_factory.mktemp("tiny_text_no_dropout")
    tokenizer = AutoTokenizer.from_pretrained(packaged_text_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return ModelConfig(image_model="test_vit", text_model=str(folder), pretrained=False, embed_dim=16, image_size=32,
                       context_length=16)


def _flags(model: ModelConfig, data: Path, out: Path, **options) -> list[str]:
    settings = {"data": data, "val_fraction": 0, "image_model": model.image_model, "text_model": model.text_model,
                "embed_dim": model.embed_dim, "image_size": model.image_size, "context_length": model.context_length,
                "workers": 0, "lr": 5e-3, "tower_lr": 1e-3, "warmup_steps": 0, "out_dir": out, "device": "cpu",
                "precision": "fp32", "lock_image": False, **options}
    flags = ["--no-pretrained"]
    for name, value in settings.items():
        flag = "--" + name.replace("_", "-")
        flags += [flag] if value is True else ["--no-" + flag[2:]] if value is False else [flag, str(value)]
    return flags


def _config(model: ModelConfig, data: Path, out: Path, **options) -> TrainConfig:
    settings = {"data": str(data), "val_fraction": 0.0, "model": model, "workers": 0, "lr": 5e-3, "tower_lr": 1e-3,
                "warmup_steps": 0, "out_dir": str(out), "device": "cpu", "precision": "fp32", "lock_image": False,
                **options}
    return TrainConfig(**settings)


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=300)


def _step_losses(run: Path) -> list[float]:
    records = map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
    return [r["loss"] for r in records if r["type"] == "step"]


def _max_difference(a: Path, b: Path, prefix: str = "") -> float:
    """Largest absolute difference between two checkpoints' tensors (weights, optimiser moments)
    whose names start with `prefix`."""
    from safetensors.torch import load_file

    x, y = load_file(a), load_file(b)
    names = [k for k in x if k.startswith(prefix) and not k.startswith(STATE_PREFIX + "rng")]
    assert names and sorted(names) == sorted(k for k in y if k.startswith(prefix) and not k.startswith(STATE_PREFIX + "rng"))
    return max((x[k].double() - y[k].double()).abs().max().item() for k in names)


def test_local_losses_average_to_the_global_loss_with_the_same_gradients():
    generator = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(8, 5, generator=generator), dim=-1).requires_grad_()
    texts = torch.nn.functional.normalize(torch.randn(8, 5, generator=generator), dim=-1).requires_grad_()
    scale = torch.tensor(10.0, requires_grad=True)
    whole = contrastive_loss(images, texts, scale)
    expected = torch.autograd.grad(whole, (images, texts, scale))
    parts = [local_contrastive_loss(images[r * 4:(r + 1) * 4], texts[r * 4:(r + 1) * 4], images, texts, scale, r * 4)
             for r in range(2)]
    mean = sum(parts) / 2
    assert mean.item() == pytest.approx(whole.item(), rel=1e-6)
    assert all(torch.allclose(g, e, atol=1e-6) for g, e in zip(torch.autograd.grad(mean, (images, texts, scale)), expected))
    assert abs(parts[0].item() - parts[1].item()) > 1e-3  # each rank's share is not the global loss itself


def test_one_step_on_two_processes_equals_one_process_with_the_global_batch(model_config, tmp_path):
    """`tmv train --nproc 2` with batch 4 per rank against one process with batch 8: the whole
    model trains (both towers), one AdamW step over all 8 pairs, on noise images whose random crops
    all differ (a crop seeded per process instead of per image changes the loss by ~0.08)."""
    data = noise_images(tmp_path / "noise")
    single = train(_config(model_config, data, tmp_path / "single", epochs=1, batch_size=8))
    result = _run(["-m", "tinymvlm.cli", "train", *_flags(model_config, data, tmp_path / "ddp", epochs=1,
                                                          batch_size=4, nproc=2)])
    assert result.returncode == 0, result.stderr
    ddp = tmp_path / "ddp"
    assert sorted(p.name for p in ddp.iterdir()) == sorted(p.name for p in single.iterdir())
    assert _step_losses(ddp) == pytest.approx(_step_losses(single), abs=1e-6)
    # Weights and AdamW's moments: a first Adam step hardly depends on the gradient's scale, the
    # moments do (a gather whose backward misses other ranks' gradients is off by 6e-4 here).
    assert _max_difference(single / "latest.safetensors", ddp / "latest.safetensors") < 1e-5
    lines = result.stderr.splitlines()  # rank 0 alone reports
    assert sum("training on 8 images" in line for line in lines) == 1
    assert "in each of 2 processes" in result.stderr
    assert sum(line.startswith("done:") for line in lines) == 1


def test_two_processes_share_one_image_cache(model_config, tmp_path):
    """Rank 0 builds the run's --image-cache while the other waits, then both crop from it: the
    losses of one plain process (images under the cache's side are cached unshrunk, so the same pixels)."""
    data = noise_images(tmp_path / "noise")
    single = train(_config(model_config, data, tmp_path / "single", epochs=1, batch_size=8))
    result = _run(["-m", "tinymvlm.cli", "train", *_flags(model_config, data, tmp_path / "ddp", epochs=1,
                                                          batch_size=4, nproc=2, image_cache=True)])
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ddp" / "image_cache.u8").is_file()
    assert sum("image cache: decoding 8 training images" in line for line in result.stderr.splitlines()) == 1
    assert _step_losses(tmp_path / "ddp") == pytest.approx(_step_losses(single), abs=1e-6)


def _two_colour_images(folder: Path) -> None:
    """Eight more images, two colours side by side, so a dataset of 16 takes several batches."""
    from conftest import COLOURS
    from PIL import Image

    names = list(COLOURS)
    for left, right in zip(names, names[1:] + names[:1]):
        image = Image.new("RGB", (48, 48), COLOURS[left])
        image.paste(COLOURS[right], (24, 0, 48, 48))
        image.save(folder / f"{left}-{right}.png")
        (folder / f"{left}-{right}.txt").write_text(f"{left} on the left, {right} on the right\n", encoding="utf-8")


def test_torchrun_with_local_loss_accumulation_locked_tower_and_resume(model_config, colour_folder, tmp_path):
    """torchrun itself, 2 ranks x batch 2 x 2 micro-batches per step, a cached locked image tower,
    stopped after epoch 1 and resumed: the same 4 steps as one process with batch 4 x 2. (A constant
    learning rate, so that a run of 1 epoch continued to 2 follows the schedule of a run of 2.)"""
    _two_colour_images(colour_folder)
    options = {"accum_steps": 2, "lock_image": True, "image_views": 2, "min_lr_ratio": 1.0}
    single = train(_config(model_config, colour_folder, tmp_path / "single", epochs=2, batch_size=4, **options))
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "tinymvlm.cli", "train"]
    ddp = tmp_path / "ddp"
    first = _run([*torchrun, *_flags(model_config, colour_folder, ddp, epochs=1, batch_size=2, local_loss=True,
                                     **options)])
    assert first.returncode == 0, first.stderr
    assert len(_step_losses(ddp)) == 2
    resumed = _run([*torchrun, "--out-dir", str(ddp), "--resume", "latest", "--epochs", "2"])
    assert resumed.returncode == 0, resumed.stderr
    expected = _step_losses(single)
    assert len(expected) == 4 and len(set(expected)) == 4
    assert _step_losses(ddp) == pytest.approx(expected, rel=1e-5)
    assert _max_difference(single / "latest.safetensors", ddp / "latest.safetensors", "image_tower.") == 0
    assert _max_difference(single / "latest.safetensors", ddp / "latest.safetensors") < 1e-4


def test_a_failing_run_under_nproc_is_one_line(tmp_path):
    result = _run(["-m", "tinymvlm.cli", "train", "--nproc", "2", "--data", str(tmp_path / "absent.tsv")])
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: --data {tmp_path / 'absent.tsv'}: no such file or folder"


def test_the_launcher_reports_the_first_real_failure_not_a_process_it_stopped(tmp_path):
    """Rank 1 fails; rank 0 waits for a signal and is stopped by the launcher with SIGTERM (the
    order that used to add a second line about rank 0's status -15)."""
    from tinymvlm.distributed import launch

    script = tmp_path / "job.py"
    script.write_text("import os, signal, sys\n"
                      "from tinymvlm.distributed import record_failure\n"
                      "if os.environ['RANK'] == '1':\n"
                      "    record_failure('rank 1 found a problem')\n"
                      "    sys.exit(2)\n"
                      "signal.pause()\n", encoding="utf-8")
    with pytest.raises(TmvError) as caught:
        launch(2, [str(script)], str(tmp_path), "test")
    assert str(caught.value) == "rank 1 found a problem"
    # Rank 0 records its error first and is stopped on its way out (here: waiting for a signal),
    # after rank 1, failing because rank 0 did, has exited: rank 0's error is the cause.
    (tmp_path / "recorded").unlink(missing_ok=True)
    script.write_text("import os, signal, sys, time\n"
                      "from pathlib import Path\n"
                      "from tinymvlm.distributed import record_failure\n"
                      f"event = Path({str(tmp_path / 'recorded')!r})\n"
                      "if os.environ['RANK'] == '0':\n"
                      "    record_failure('rank 0 found the problem')\n"
                      "    event.touch()\n"
                      "    signal.pause()\n"
                      "while not event.exists():\n"
                      "    time.sleep(0.01)\n"
                      "record_failure('rank 1 lost rank 0')\n"
                      "sys.exit(2)\n", encoding="utf-8")
    with pytest.raises(TmvError) as caught:
        launch(2, [str(script)], str(tmp_path), "test")
    assert str(caught.value) == "rank 0 found the problem"
    script.write_text("import os, sys\nsys.exit(3 if os.environ['RANK'] == '1' else 0)\n", encoding="utf-8")
    with pytest.raises(TmvError, match="^test process 1 of 2 failed with exit status 3; see its output above$"):
        launch(2, [str(script)], str(tmp_path), "test")


def test_the_first_failure_is_the_earliest_recorded_error_never_a_stopped_process():
    import signal

    from tinymvlm.distributed import Failure, first_failure

    stopped = Failure(0, -signal.SIGTERM)
    late, early = Failure(1, 2, "late", 20), Failure(2, 2, "early", 10)
    assert first_failure([stopped, late, early]) == early
    assert first_failure([stopped, Failure(3, 1)]) == Failure(3, 1)
    assert first_failure([Failure(1, -signal.SIGTERM), stopped]) == stopped  # all stopped: the lowest rank
    assert first_failure([stopped, Failure(1, -signal.SIGKILL)]) == Failure(1, -signal.SIGKILL)
    recorded_then_stopped = Failure(0, -signal.SIGTERM, "the cause", 5)
    assert first_failure([Failure(1, 2, "lost rank 0", 9), recorded_then_stopped]) == recorded_then_stopped
    assert first_failure([]) is None


def test_bad_process_counts_are_one_line_errors(monkeypatch):
    result = CliRunner().invoke(cli, ["train", "--nproc", "0"])
    assert result.exit_code == 2 and result.output.strip() == "error: --nproc must be 1 or more, not 0"
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = CliRunner().invoke(cli, ["train", "--nproc", "2"])
    assert result.exit_code == 2
    assert result.output.strip() == "error: --nproc starts its own processes; under torchrun leave it out"


def test_a_run_started_in_two_processes_resumes_in_one(model_config, tmp_path):
    """Epoch 1 under `--nproc 2` x batch 4, epoch 2 resumed in one process x batch 8 (the same global
    batch): the steps and weights of one process x 8 throughout, both towers training on random crops
    (each image's crop depends on the image and epoch alone, not on the process count)."""
    data = noise_images(tmp_path / "noise")
    options = {"min_lr_ratio": 1.0}  # a constant rate: a run of 1 epoch continued to 2 follows a run of 2
    single = train(_config(model_config, data, tmp_path / "single", epochs=2, batch_size=8, **options))
    run = tmp_path / "run"
    first = _run(["-m", "tinymvlm.cli", "train", *_flags(model_config, data, run, epochs=1, batch_size=4, nproc=2,
                                                         **options)])
    assert first.returncode == 0, first.stderr
    resumed = _run(["-m", "tinymvlm.cli", "train", "--out-dir", str(run), "--resume", "latest", "--epochs", "2",
                    "--batch-size", "8"])
    assert resumed.returncode == 0, resumed.stderr
    expected = _step_losses(single)
    assert len(expected) == 2 and _step_losses(run) == pytest.approx(expected, abs=1e-6)
    assert _max_difference(single / "latest.safetensors", run / "latest.safetensors") < 1e-5
