"""Training runs end to end on tiny towers: checkpoints, metrics, exact resume, locking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tinymvlm.models.checkpoint import load_checkpoint, read_metadata
from tinymvlm.training.config import TrainConfig
from tinymvlm.training.optim import lr_factor
from tinymvlm.training.trainer import Reporter, train


def _config(tiny_model_config, data: Path, out: Path, **overrides) -> TrainConfig:
    settings = dict(data=str(data), val_data=str(data), model=tiny_model_config, epochs=4, batch_size=4, lr=5e-3,
                    tower_lr=1e-3, warmup_steps=0, workers=0, out_dir=str(out))
    settings.update(overrides)
    return TrainConfig(**settings)


def _records(run: Path, kind: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


def test_training_writes_checkpoints_and_the_loss_falls(tiny_model_config, colour_folder, tmp_path):
    run = train(_config(tiny_model_config, colour_folder, tmp_path / "run", epochs=6, save_every=2))
    names = sorted(p.name for p in run.iterdir())
    assert names == ["best.safetensors", "config.yaml", "curves.png", "epoch_002.safetensors", "epoch_004.safetensors",
                     "epoch_006.safetensors", "latest.safetensors", "metrics.jsonl", "start.safetensors"]
    epochs = _records(run, "epoch")
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4, 5, 6]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert {"t2i_R@1", "i2t_R@10", "t2i_median_rank"} <= set(epochs[-1]["val"])
    meta = read_metadata(run / "epoch_002.safetensors")
    assert "trainer_state" not in meta
    assert read_metadata(run / "latest.safetensors")["trainer_state"]["epoch"] == 6


class _StopAt(Reporter):
    """Simulates a kill in the middle of an epoch."""

    def __init__(self, step: int) -> None:
        self.stop_step = step

    def step(self, step, epoch, loss, lr, pairs_per_s) -> None:
        if step == self.stop_step:
            raise KeyboardInterrupt


def test_resume_after_an_interruption_reproduces_the_uninterrupted_losses(tiny_model_config, colour_folder, tmp_path):
    full = train(_config(tiny_model_config, colour_folder, tmp_path / "full"))
    cut = _config(tiny_model_config, colour_folder, tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt):
        train(cut, _StopAt(step=5))  # 2 steps per epoch: stops inside epoch 3, after epoch 2's checkpoint
    assert read_metadata(tmp_path / "cut" / "latest.safetensors")["trainer_state"]["epoch"] == 2
    train(_config(tiny_model_config, colour_folder, tmp_path / "cut", resume="latest"))
    expected = [r["loss"] for r in _records(full, "step")]
    resumed = [r["loss"] for r in _records(tmp_path / "cut", "step")]
    assert len(resumed) == len(expected) == 8
    assert resumed == pytest.approx(expected, rel=1e-5, abs=1e-6)
    a, _, _ = load_checkpoint(full / "latest.safetensors")
    b, _, _ = load_checkpoint(tmp_path / "cut" / "latest.safetensors")
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(x, y, atol=1e-6), name


def test_locked_image_tower_and_partly_unlocked_text_tower(tiny_model_config, colour_folder, tmp_path):
    from tinymvlm.models.factory import create_model

    torch.manual_seed(0)
    cfg = _config(tiny_model_config, colour_folder, tmp_path / "lit", epochs=1, lock_image=True, lock_text=True,
                  lock_text_unlocked=1, accum_steps=2, precision="bf16", val_data=None, val_fraction=0.0)
    torch.manual_seed(cfg.seed)
    before, _ = create_model(tiny_model_config)
    run = train(cfg)
    after, _, _ = load_checkpoint(run / "latest.safetensors")
    same = lambda name: torch.equal(before.state_dict()[name], after.state_dict()[name])  # noqa: E731
    assert all(same(n) for n in before.state_dict() if n.startswith("image_tower."))
    assert same("text_tower.encoder.layer.0.attention.self.query.weight")
    assert not same("text_tower.encoder.layer.1.attention.self.query.weight")
    heads = [n for n in before.state_dict() if n.startswith(("image_proj.", "text_proj."))]
    assert heads and not any(same(n) for n in heads if n.endswith("weight"))


def test_training_crops_can_be_smaller_than_the_evaluation_size(tiny_model_config, colour_folder, tmp_path, monkeypatch):
    from tinymvlm.models.tinyclip import TinyClip

    sizes: list[tuple[int, ...]] = []
    encode = TinyClip.encode_image

    def recording(self, pixels):
        sizes.append((tuple(pixels.shape[-2:]), self.training))
        return encode(self, pixels)

    monkeypatch.setattr(TinyClip, "encode_image", recording)
    run = train(_config(tiny_model_config, colour_folder, tmp_path / "small", epochs=1, lock_image=False,
                        train_image_size=16, channels_last=False))
    assert {s for s, training in sizes if training} == {(16, 16)}
    assert {s for s, training in sizes if not training} == {(32, 32)}
    model, _, _ = load_checkpoint(run / "latest.safetensors")
    assert model.data_config["input_size"] == [3, 32, 32]


def test_smaller_training_crops_are_refused_for_a_fixed_size_tower(tiny_model_config, colour_folder, tmp_path):
    from dataclasses import replace

    from tinymvlm.errors import TmvError

    fixed = replace(tiny_model_config, image_model="test_vit3")
    with pytest.raises(TmvError, match="takes only 32 px"):
        train(_config(fixed, colour_folder, tmp_path / "fixed", lock_image=False, train_image_size=16))


def test_gradient_checkpointing_trains_exactly_as_without(tiny_model_config, colour_folder, tmp_path, monkeypatch):
    from tinymvlm.training import freeze

    towers = []
    enable = freeze.checkpoint_activations
    monkeypatch.setattr(freeze, "checkpoint_activations", lambda model: (enable(model), towers.append(model)))
    runs = [train(_config(tiny_model_config, colour_folder, tmp_path / str(flag), epochs=2, lock_image=False,
                          val_data=None, val_fraction=0.0, grad_checkpointing=flag))
            for flag in (False, True)]
    plain, checkpointed = ([r["loss"] for r in _records(run, "step")] for run in runs)
    assert len(plain) == 4
    assert len(towers) == 1 and towers[0].image_tower.grad_checkpointing
    assert checkpointed == pytest.approx(plain, rel=1e-4, abs=1e-5)


def test_schedule_warms_up_then_decays_to_the_floor():
    assert lr_factor(0, 100, 10, 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, 0.1) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10, 0.1) == pytest.approx(1.0)
    assert lr_factor(100, 100, 10, 0.1) == pytest.approx(0.1)
    assert lr_factor(55, 100, 10, 0.0) == pytest.approx(0.5)


def test_each_images_crop_is_seeded_by_the_image_and_epoch_alone(tiny_model_config, tmp_path):
    """Whatever process, worker or batch transforms an image, and whatever was drawn before, its
    crop in an epoch is the same: what makes N processes crop as one process would."""
    import random

    from conftest import noise_images

    from tinymvlm.data.pairs import load_image_folder
    from tinymvlm.data.transform import build_transforms
    from tinymvlm.models.factory import create_model
    from tinymvlm.training.batches import PairDataset, train_data_config

    model, _ = create_model(tiny_model_config)
    pairs = load_image_folder(noise_images(tmp_path / "noise", count=3))
    dataset = PairDataset(pairs, build_transforms(train_data_config(model, None), training=True), [[[1]]] * 3)
    dataset.set_epoch(0, 0)
    first = dataset[2][0]
    torch.manual_seed(123)
    random.seed(123)
    drawn = torch.rand(1).item(), random.random()  # global-stream: seeded just above, on purpose
    assert not torch.equal(dataset[1][0], first)
    assert torch.equal(dataset[2][0], first)  # the same crop after other draws and other items
    torch.manual_seed(123)
    random.seed(123)
    dataset[0]
    assert (torch.rand(1).item(), random.random()) == drawn  # global-stream: a crop leaves the global streams alone
    dataset.set_epoch(0, 1)
    assert not torch.equal(dataset[2][0], first)  # another epoch, another crop


def test_best_checkpoint_holds_the_best_scoring_epoch_not_the_last(tiny_model_config, colour_folder, tmp_path,
                                                                  monkeypatch):
    """Validation scores scripted to peak at epoch 2 of 3: best.safetensors is epoch 2's model (its
    weights, epoch and metrics), while latest moves on."""
    from safetensors.torch import load_file

    from tinymvlm.training import trainer as train_module

    scores = iter([10.0, 30.0, 20.0])

    def scripted(*args, **kwargs):
        value = next(scores)
        return {f"{d}_R@{k}": value for d in ("t2i", "i2t") for k in (1, 5, 10)}

    monkeypatch.setattr(train_module, "evaluate", scripted)
    run = train(_config(tiny_model_config, colour_folder, tmp_path / "run", epochs=3, save_every=1))
    best = read_metadata(run / "best.safetensors")["info"]
    assert best["epoch"] == 2 and best["metrics"]["t2i_R@1"] == 30.0
    weights = lambda name: {k: v for k, v in load_file(run / name).items()}  # noqa: E731
    got, epoch2, latest = weights("best.safetensors"), weights("epoch_002.safetensors"), weights("latest.safetensors")
    assert all(torch.equal(got[k], epoch2[k]) for k in epoch2)
    assert any(not torch.equal(got[k], latest[k]) for k in epoch2)


def test_several_captions_per_image_take_turns_across_epochs(tiny_model_config, tmp_path):
    """An image on several rows of a pairs file trains with one of its captions each epoch, drawn
    from (seed, epoch): over the epochs every caption is used, the same for every process."""
    from PIL import Image

    from tinymvlm.data.pairs import load_pairs
    from tinymvlm.training.batches import PairDataset, pretokenize

    folder = tmp_path / "data"
    folder.mkdir()
    rows = ["image\tcaption"]
    for i in range(4):
        Image.new("RGB", (40, 40), (60 * i, 30, 200 - 40 * i)).save(folder / f"img{i}.png")
        rows += [f"img{i}.png\tpicture {i} told in words number {j}" for j in range(3)]
    (folder / "pairs.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    pairs = load_pairs(str(folder / "pairs.tsv"))
    assert pairs.num_captions == 12 and all(len(c) == 3 for c in pairs.captions)

    class Heard(Reporter):
        def start(self, total_steps, start_step, info):
            self.info = info

    heard = Heard()
    train(_config(tiny_model_config, folder / "pairs.tsv", tmp_path / "run", epochs=1, val_data=None,
                  val_fraction=0.0), heard)
    assert (heard.info["train_images"], heard.info["train_captions"]) == (4, 12)

    _, tokenizer, _ = load_checkpoint(tmp_path / "run" / "latest.safetensors")
    tokens = pretokenize(tokenizer, pairs.captions, 16)
    dataset = PairDataset(pairs, lambda image: torch.zeros(1), tokens)
    again = PairDataset(pairs, lambda image: torch.zeros(1), tokens)  # another process's copy
    used = [set() for _ in range(4)]
    for epoch in range(12):
        dataset.set_epoch(0, epoch)
        again.set_epoch(0, epoch)
        for i in range(4):
            ids = dataset[i][1]
            assert ids == again[i][1] and ids in tokens[i]  # one of this image's own captions, as elsewhere
            used[i].add(tokens[i].index(ids))
    assert used == [{0, 1, 2}] * 4
