"""The optimiser: AdamW's parameter groups, the learning-rate schedule, and its state saved into (and
restored from) `latest.safetensors` as tensors and JSON, never pickles."""

from __future__ import annotations

import json
import math
import random

import torch

from tinymvlm.models.tinyclip import TinyClip
from tinymvlm.training.config import TrainConfig


def param_groups(model: TinyClip, cfg: TrainConfig) -> list[dict]:
    """Heads and temperature at `lr`, towers at `tower_lr`; no decay on biases, norms, scale."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        tower = name.startswith(("image_tower.", "text_tower."))
        decay = p.ndim >= 2 and name != "logit_scale"
        groups.setdefault((tower, decay), []).append(p)
    return [{"params": ps, "lr": cfg.tower_lr if tower else cfg.lr, "base_lr": cfg.tower_lr if tower else cfg.lr,
             "weight_decay": cfg.weight_decay if decay else 0.0}
            for (tower, decay), ps in sorted(groups.items())]


def create_optimizer(model: TinyClip, cfg: TrainConfig) -> torch.optim.Optimizer:
    # fused: one kernel over all parameters, faster and without foreach's temporary copies
    return torch.optim.AdamW(param_groups(model, cfg), betas=(0.9, 0.98), eps=1e-6, fused=True)


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warmup to 1, then cosine decay to `min_ratio`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor


def trainer_state(optimizer: torch.optim.Optimizer, epoch: int, step: int, best: float | None):
    """(tensors, JSON-able dict) of everything a resume needs besides the weights."""
    sd = optimizer.state_dict()
    tensors = {f"optim.{pid}.{k}": v for pid, st in sd["state"].items() for k, v in st.items() if torch.is_tensor(v)}
    tensors["rng.torch"] = torch.get_rng_state()
    info = {"epoch": epoch, "step": step, "best": best, "param_groups": sd["param_groups"],
            "python_rng": json.loads(json.dumps(random.getstate()))}
    return tensors, info


def restore_trainer_state(optimizer: torch.optim.Optimizer, tensors: dict, info: dict) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": info["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    version, internal, gauss = info["python_rng"]
    random.setstate((version, tuple(internal), gauss))
