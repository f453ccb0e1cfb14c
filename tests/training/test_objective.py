"""The training objective against references that share no code with it: the symmetric InfoNCE of a
batch written out in numpy (with its gradient), AdamW's parameter groups named one by one, the best
epoch chosen by the mean of six recalls on metrics that disagree, and a tiny run whose held-out
recall rises above the untrained model's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tinymvlm.training.config import TrainConfig
from tinymvlm.training.trainer import train

SCALE = 7.0  # ModelConfig's documented starting inverse temperature


def infonce(images: np.ndarray, texts: np.ndarray, scale: float) -> tuple[float, np.ndarray, np.ndarray]:
    """(loss, d loss / d images, d loss / d texts) of CLIP's symmetric InfoNCE, in float64: the mean
    cross-entropy of each image picking its own caption among the batch's, and of each caption
    picking its image, halved."""
    images, texts = images.astype(np.float64), texts.astype(np.float64)
    logits = scale * images @ texts.T
    n = len(logits)

    def log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
        shifted = x - x.max(axis=axis, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))

    by_row, by_column = log_softmax(logits, 1), log_softmax(logits, 0)
    loss = -(np.trace(by_row) / n + np.trace(by_column) / n) / 2
    eye = np.eye(n)
    d_logits = ((np.exp(by_row) - eye) + (np.exp(by_column) - eye)) / (2 * n)
    return float(loss), scale * d_logits @ texts, scale * d_logits.T @ images


def _config(tiny_model_config, data: Path, out: Path, **overrides) -> TrainConfig:
    settings = dict(data=str(data), val_fraction=0.0, model=tiny_model_config, epochs=1, batch_size=8, lr=5e-3,
                    tower_lr=1e-3, warmup_steps=0, workers=0, out_dir=str(out), device="cpu", precision="fp32")
    settings.update(overrides)
    return TrainConfig(**settings)


def _records(run: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["type"] == kind]


def test_the_reference_is_infonce():
    """The reference itself, on cases worked by hand: a perfect match at a high scale costs ~0, and
    orthogonal-to-everything embeddings cost log(n) whatever the scale."""
    eye = np.eye(4)
    assert infonce(eye, eye, 50.0)[0] == pytest.approx(0.0, abs=1e-12)
    same = np.ones((4, 3)) / np.sqrt(3)
    assert infonce(same, same, SCALE)[0] == pytest.approx(np.log(4))
    two = np.array([[1.0, 0.0], [0.0, 1.0]])
    expected = np.log(1 + np.exp(-SCALE))  # each row: its own logit SCALE against one logit 0
    assert infonce(two, two, SCALE)[0] == pytest.approx(expected)


def test_the_trainers_loss_is_the_symmetric_infonce_of_its_batch(tiny_model_config, colour_folder, tmp_path,
                                                                 monkeypatch):
    """The first step of a real run (one batch of all 8 pairs, the scale still at its start of 7):
    the loss the trainer computes, and logs, is the numpy InfoNCE of that batch's embeddings at 7."""
    from tinymvlm.training import trainer

    seen = []
    real = trainer.global_contrastive_loss

    def recording(image_emb, text_emb, scale, local_loss=False):
        loss = real(image_emb, text_emb, scale, local_loss)
        seen.append((image_emb.detach().numpy().copy(), text_emb.detach().numpy().copy(), loss.item()))
        return loss

    monkeypatch.setattr(trainer, "global_contrastive_loss", recording)
    run = train(_config(tiny_model_config, colour_folder, tmp_path / "run", epochs=2))
    images, texts, loss = seen[0]
    assert images.shape == (8, tiny_model_config.embed_dim)
    expected, _, _ = infonce(images, texts, SCALE)
    assert loss == pytest.approx(expected, rel=1e-5)
    assert _records(run, "step")[0]["loss"] == pytest.approx(expected, rel=1e-5)  # what the user reads
    later_images, later_texts, later_loss = seen[1]  # step 2: the scale has moved off 7 and is used as it is now
    assert later_loss != pytest.approx(infonce(later_images, later_texts, SCALE)[0], rel=1e-6)


DDP_SCRIPT = """
import json, sys
import torch
from tinymvlm import distributed
from tinymvlm.training.loss import global_contrastive_loss
with distributed.session("cpu") as (info, device):
    generator = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(8, 5, generator=generator), dim=-1)
    texts = torch.nn.functional.normalize(torch.randn(8, 5, generator=generator), dim=-1)
    rows = slice(4 * info.rank, 4 * info.rank + 4)
    out = {}
    for local in (False, True):
        mine_i, mine_t = images[rows].clone().requires_grad_(), texts[rows].clone().requires_grad_()
        loss = global_contrastive_loss(mine_i, mine_t, torch.tensor(float(sys.argv[1])), local_loss=local)
        loss.backward()
        grads = [g / info.world_size for g in (mine_i.grad, mine_t.grad)]  # DDP averages the ranks' gradients
        gathered = [distributed.gather_with_grad(g.detach()) for g in grads]
        out["local" if local else "global"] = {"loss": distributed.mean(loss.item(), device),
                                               "images": gathered[0].tolist(), "texts": gathered[1].tolist()}
    if info.is_main:
        out["inputs"] = [images.tolist(), texts.tolist()]
        print(json.dumps(out))
"""


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")
def test_two_processes_gathered_loss_and_gradients_are_the_reference(tmp_path):
    """2 gloo processes with 4 pairs each: the global loss, and the mean of the local losses, are the
    InfoNCE of all 8 pairs, and each rank's gradients (as DDP averages them) are the reference's."""
    script = tmp_path / "ddp_loss.py"
    script.write_text(DDP_SCRIPT, encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(SCALE)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    images, texts = (np.array(x) for x in out["inputs"])
    loss, d_images, d_texts = infonce(images, texts, SCALE)
    for form in ("global", "local"):
        assert out[form]["loss"] == pytest.approx(loss, rel=1e-6), form
        assert np.allclose(out[form]["images"], d_images, atol=1e-6), form
        assert np.allclose(out[form]["texts"], d_texts, atol=1e-6), form


def _no_decay(name: str) -> bool:
    """What AdamW must not decay, by name: biases, norm layers' weights, the temperature."""
    module = name.rsplit(".", 2)[-2] if name.count(".") else ""
    return name == "logit_scale" or name.endswith(".bias") or "norm" in module.lower()


def test_optimizer_groups_by_parameter_name(tiny_model_config):
    """Each parameter's weight decay and learning rate, by its name: the heads and the temperature at
    --lr, the towers at --tower-lr, decay on weight matrices and embeddings alone."""
    from tinymvlm.models.factory import create_model
    from tinymvlm.training.optim import create_optimizer

    torch.manual_seed(0)
    model, _ = create_model(tiny_model_config)
    cfg = TrainConfig(lr=3e-3, tower_lr=2e-4, weight_decay=0.05)
    optimizer = create_optimizer(model, cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    placed = {names[id(p)]: (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    assert sorted(placed) == sorted(n for n, p in model.named_parameters() if p.requires_grad)
    by_hand = {"logit_scale": (3e-3, 0.0), "image_proj.weight": (3e-3, 0.05), "image_proj.bias": (3e-3, 0.0),
               "text_proj.weight": (3e-3, 0.05), "text_proj.bias": (3e-3, 0.0),
               "image_tower.blocks.0.norm1.weight": (2e-4, 0.0), "image_tower.norm.bias": (2e-4, 0.0),
               "image_tower.blocks.0.attn.qkv.weight": (2e-4, 0.05), "image_tower.pos_embed": (2e-4, 0.05),
               "text_tower.embeddings.LayerNorm.weight": (2e-4, 0.0),
               "text_tower.embeddings.word_embeddings.weight": (2e-4, 0.05),
               "text_tower.encoder.layer.0.attention.self.query.weight": (2e-4, 0.05),
               "text_tower.encoder.layer.0.attention.self.query.bias": (2e-4, 0.0),
               "text_tower.encoder.layer.1.output.LayerNorm.weight": (2e-4, 0.0)}
    assert {n: placed[n] for n in by_hand} == by_hand
    for name, (lr, decay) in placed.items():
        tower = name.startswith(("image_tower.", "text_tower."))
        assert (lr, decay) == ((2e-4 if tower else 3e-3), (0.0 if _no_decay(name) else 0.05)), name


def test_best_epoch_is_the_mean_of_six_recalls_on_metrics_that_disagree(tiny_model_config, colour_folder, tmp_path,
                                                                       monkeypatch):
    """Epoch 1 has the best text->image R@1, epoch 3 the best image->text recalls and R@1 both ways on
    average, epoch 2 the best mean of R@1/5/10 both ways (30 against 10 and 25): best is epoch 2."""
    from tinymvlm.models.checkpoint import read_metadata
    from tinymvlm.training import trainer

    keys = [f"{d}_R@{k}" for d in ("t2i", "i2t") for k in (1, 5, 10)]
    scripted = iter([dict(zip(keys, [60, 0, 0, 0, 0, 0])), dict(zip(keys, [10, 40, 40, 10, 40, 40])),
                     dict(zip(keys, [20, 20, 20, 40, 25, 25]))])
    monkeypatch.setattr(trainer, "evaluate", lambda *args, **kwargs: dict(next(scripted)))
    assert trainer.selection_score(dict(zip(keys, [10, 40, 40, 10, 40, 40]))) == pytest.approx(30.0)
    run = train(_config(tiny_model_config, colour_folder, tmp_path / "run", epochs=3, batch_size=4,
                        val_data=str(colour_folder)))
    best = read_metadata(run / "best.safetensors")["info"]
    assert best["epoch"] == 2 and best["metrics"]["t2i_R@5"] == 40
    assert read_metadata(run / "latest.safetensors")["trainer_state"]["best"] == pytest.approx(30.0)


def _shades(folder: Path, shades: list[int]) -> Path:
    """Solid squares of the 8 named colours, each at the given brightness shifts, captioned by colour."""
    from PIL import Image

    from conftest import COLOURS

    folder.mkdir(parents=True)
    for name, rgb in COLOURS.items():
        for shift in shades:
            shade = tuple(min(255, max(0, c + shift)) for c in rgb)
            Image.new("RGB", (40, 40), shade).save(folder / f"{name}{shift:+d}.png")
            (folder / f"{name}{shift:+d}.txt").write_text(f"a plain {name} square\n", encoding="utf-8")
    return folder


def test_a_tiny_run_lifts_held_out_recall_above_the_untrained_models(tiny_model_config, tmp_path):
    """Trained on 5 shades of each of 8 colours, evaluated (tmv eval) on a shade it never saw: the
    trained model finds the held-out squares from their captions far better than the model it started as."""
    from click.testing import CliRunner

    from tinymvlm.cli.main import cli

    train_folder = _shades(tmp_path / "train", [-30, -15, 0, 15, 30])
    val_folder = _shades(tmp_path / "val", [8])
    run = train(_config(tiny_model_config, train_folder, tmp_path / "run", epochs=8, batch_size=8,
                        val_data=str(val_folder), lr=1e-2, image_views=2))

    def recall(checkpoint: str) -> dict:
        out = tmp_path / f"{checkpoint}.json"
        result = CliRunner().invoke(cli, ["eval", "--checkpoint", str(run / checkpoint), "--data", str(val_folder),
                                          "--precision", "fp32", "--json", str(out)])
        assert result.exit_code == 0, result.output
        return json.loads(out.read_text())["metrics"]

    before, after = recall("start.safetensors"), recall("best.safetensors")
    assert after["t2i_R@1"] >= before["t2i_R@1"] + 25, (before, after)
    assert after["i2t_R@1"] >= before["i2t_R@1"] + 25, (before, after)
