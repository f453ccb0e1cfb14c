"""Which weights train: LiT-style locking of either tower (all but its last groups or layers), the
train/eval mode of locked towers, and recomputing activations to save memory."""

from __future__ import annotations

import torch

from tinymvlm.errors import TmvError
from tinymvlm.models.tinyclip import TinyClip
from tinymvlm.training.config import TrainConfig


def lock_image(model: TinyClip, unlocked: int) -> None:
    """Freeze the image tower except its last `unlocked` parameter groups (timm's own grouping)."""
    from timm.models import group_parameters

    tower = model.image_tower
    for p in tower.parameters():
        p.requires_grad = False
    if unlocked > 0:
        if not hasattr(tower, "group_matcher"):
            raise TmvError(f"image tower {model.image_arch} has no timm parameter groups to unlock; use --lock-image-unlocked 0 "
                           "or --no-lock-image")
        groups = group_parameters(tower, tower.group_matcher(coarse=True), reverse=False)
        names = dict(tower.named_parameters())
        for group in list(groups.values())[-unlocked:]:
            for name in group:
                names[name].requires_grad = True


def lock_text(model: TinyClip, unlocked: int) -> None:
    """Freeze the text tower except its last `unlocked` transformer layers."""
    tower = model.text_tower
    for p in tower.parameters():
        p.requires_grad = False
    if unlocked > 0:
        layers = next((m for name, m in tower.named_modules()
                       if name.endswith(("layer", "layers", "resblocks")) and isinstance(m, torch.nn.ModuleList)), None)
        if layers is None:
            raise TmvError("cannot find the text tower's layer list to unlock; use --lock-text-unlocked 0")
        for layer in list(layers)[-unlocked:]:
            for p in layer.parameters():
                p.requires_grad = True


def checkpoint_activations(model: TinyClip) -> None:
    """Recompute the image tower's activations in the backward pass instead of keeping them: much
    less memory, for 1.6x the time per step on CPU (benchmarks/bench_train_levers.py). The text tower is left alone: its
    activations are small next to the image tower's at any caption length up to the usual 77 tokens."""
    if not hasattr(model.image_tower, "set_grad_checkpointing"):
        raise TmvError(f"image tower {model.image_arch} has no gradient checkpointing; leave grad_checkpointing off")
    model.image_tower.set_grad_checkpointing(True)


def prepare(model: TinyClip, cfg: TrainConfig) -> None:
    """Lock what the config locks; checkpoint the image tower's activations when it trains."""
    if cfg.lock_image:
        lock_image(model, cfg.lock_image_unlocked)
    if cfg.lock_text:
        lock_text(model, cfg.lock_text_unlocked)
    if cfg.grad_checkpointing and any(p.requires_grad for p in model.image_tower.parameters()):
        checkpoint_activations(model)


def train_mode(model: TinyClip, cfg: TrainConfig) -> None:
    """Train mode, except that a locked tower stays in eval mode: its batch-norm statistics and
    dropout stay as pretrained."""
    model.train()
    if cfg.lock_image:
        model.image_tower.eval()
    if cfg.lock_text:
        model.text_tower.eval()
