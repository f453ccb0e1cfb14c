"""Contrastive training: data, optimiser, schedule, validation recall and checkpoints for one run.

Every epoch's randomness (sample order, caption choice, augmentation, dropout) is derived from
(seed, epoch), so `--resume latest` replays the remaining epochs exactly as an uninterrupted run.

Under torchrun every rank runs `train`: DistributedDataParallel, each rank a shard of every epoch's
order (so N ranks with batch B see the global batches one process with batch N*B would), the loss
over the global batch; rank 0 alone validates, logs, reports and writes checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import math
import contextlib
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from . import distributed

from .atomic import write_text
from .checkpoint import BEST, LATEST, load_checkpoint, save_checkpoint
from .config import ModelConfig
from .data import PairSet, drop_unreadable, load_pairs, require_pairs
from .distributed import Dist
from .embed import autocast, resolve_precision
from .errors import TmvError
from .evaluate import evaluate
from .factory import create_model
from .loss import global_contrastive_loss
from .model import TinyClip
from .transform import build_transforms

METRICS = "metrics.jsonl"
CONFIG = "config.yaml"


@dataclass
class TrainConfig:
    """Everything a run needs; `tmv train` flags and YAML keys have the same names."""

    data: str | None = None
    val_data: str | None = None
    val_fraction: float = 0.1
    image_root: str | None = None
    image_column: str | None = None
    caption_column: str | None = None
    split: str | None = None
    val_split: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    pad_to_max: bool = False
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    tower_lr: float = 1e-4
    weight_decay: float = 0.1
    warmup_steps: int = 50
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    accum_steps: int = 1
    local_loss: bool = False
    precision: str = "auto"
    lock_image: bool = True
    lock_image_unlocked: int = 0
    lock_text: bool = False
    lock_text_unlocked: int = 0
    cache_image_features: bool = True
    image_views: int = 8
    train_image_size: int | None = None
    channels_last: bool = True
    grad_checkpointing: bool = False
    seed: int = 0
    workers: int = 2
    device: str = "auto"
    out_dir: str | None = None
    save_every: int = 1
    resume: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = ModelConfig(**self.model)
        if self.precision not in ("auto", "fp32", "bf16"):
            raise TmvError(f"precision must be auto, fp32 or bf16, not '{self.precision}'")
        if not 0 <= self.val_fraction < 1:
            raise TmvError(f"val_fraction must be in [0, 1), not {self.val_fraction}")
        for name in ("epochs", "batch_size", "accum_steps", "save_every"):
            if getattr(self, name) <= 0:
                raise TmvError(f"{name} must be positive, not {getattr(self, name)}")
        if self.train_image_size is not None and self.train_image_size <= 0:
            raise TmvError(f"train_image_size must be positive, not {self.train_image_size}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class Reporter:
    """Receives progress; the CLI draws it. The library itself never prints."""

    def notice(self, message: str) -> None: ...
    def skipped(self, pairs: PairSet) -> None: ...
    def start(self, total_steps: int, start_step: int, info: dict) -> None: ...
    def step(self, step: int, epoch: int, loss: float, lr: float, pairs_per_s: float) -> None: ...
    def validating(self, epoch: int) -> None: ...
    def epoch_end(self, record: dict) -> None: ...


class PairDataset(Dataset):
    """One item per image: its pixels and one of its captions, pre-tokenised, chosen per epoch."""

    def __init__(self, pairs: PairSet, transform, token_ids: list[list[list[int]]]) -> None:
        self.pairs, self.transform, self.token_ids = pairs, transform, token_ids
        self.choice = [0] * len(pairs)

    def set_epoch(self, seed: int, epoch: int) -> None:
        rng = np.random.default_rng([seed, epoch])
        self.choice = [int(rng.integers(len(c))) for c in self.pairs.captions]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        return self.transform(self.pairs.images.open(i)), self.token_ids[i][self.choice[i]]


class FeatureDataset(Dataset):
    """Like PairDataset, but with a locked image tower's features computed once per augmented view:
    each epoch takes one cached view per image instead of running the tower again."""

    def __init__(self, features: torch.Tensor, captions: list[list[str]], token_ids: list[list[list[int]]]) -> None:
        self.features, self.captions, self.token_ids = features, captions, token_ids
        self.choice = [0] * len(captions)
        self.view = [0] * len(captions)

    def set_epoch(self, seed: int, epoch: int) -> None:
        rng = np.random.default_rng([seed, epoch])
        self.choice = [int(rng.integers(len(c))) for c in self.captions]
        self.view = rng.integers(self.features.shape[1], size=len(self.captions)).tolist()

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i: int):
        return self.features[i, self.view[i]], self.token_ids[i][self.choice[i]]


class _Views(Dataset):
    """Item k is view k % views of image k // views; with a `clean` transform, view 0 is the
    un-augmented evaluation view, so training also sees exactly what retrieval will see."""

    def __init__(self, pairs: PairSet, transform, views: int, clean=None) -> None:
        self.pairs, self.transform, self.views, self.clean = pairs, transform, views, clean

    def __len__(self) -> int:
        return len(self.pairs) * self.views

    def __getitem__(self, k: int) -> torch.Tensor:
        transform = self.clean if self.clean is not None and k % self.views == 0 else self.transform
        return transform(self.pairs.images.open(k // self.views))


@torch.inference_mode()
def image_features(model: TinyClip, pairs: PairSet, transform, views: int = 1, batch_size: int = 64,
                   workers: int = 0, precision: str = "fp32", device: torch.device | str = "cpu",
                   seed: int = 0, clean=None) -> torch.Tensor:
    """Pooled image-tower features, shape (images, views, features); augmentation is seeded."""
    model.image_tower.eval()
    torch.manual_seed(seed)
    loader = DataLoader(_Views(pairs, transform, views, clean), batch_size=batch_size, num_workers=workers,
                        generator=torch.Generator().manual_seed(seed))
    chunks = []
    for pixels in loader:
        pixels = pixels.to(device).contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            chunks.append(model.image_features(pixels).float().cpu())
    return torch.cat(chunks).view(len(pairs), views, -1)


class Collate:
    """Stack pixels; pad token ids to the longest in the batch (or to a fixed length)."""

    def __init__(self, pad_id: int, pad_to: int | None) -> None:
        self.pad_id, self.pad_to = pad_id, pad_to

    def __call__(self, batch):
        images = torch.stack([b[0] for b in batch])
        width = self.pad_to or max(len(b[1]) for b in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (_, tokens) in enumerate(batch):
            ids[row, :len(tokens)] = torch.tensor(tokens)
            mask[row, :len(tokens)] = 1
        return images, ids, mask


def pretokenize(tokenizer, captions: list[list[str]], context_length: int) -> list[list[list[int]]]:
    flat = [c for caps in captions for c in caps]
    ids = tokenizer(flat, truncation=True, max_length=context_length)["input_ids"] if flat else []
    out, pos = [], 0
    for caps in captions:
        out.append(ids[pos:pos + len(caps)])
        pos += len(caps)
    return out


# --------------------------------------------------------------------------------- locking, groups


def _lock_image(model: TinyClip, unlocked: int) -> None:
    """Freeze the image tower except its last `unlocked` parameter groups (timm's own grouping)."""
    from timm.models import group_parameters

    tower = model.image_tower
    for p in tower.parameters():
        p.requires_grad = False
    if unlocked > 0:
        groups = group_parameters(tower, tower.group_matcher(coarse=True), reverse=False)
        names = dict(tower.named_parameters())
        for group in list(groups.values())[-unlocked:]:
            for name in group:
                names[name].requires_grad = True


def _lock_text(model: TinyClip, unlocked: int) -> None:
    """Freeze the text tower except its last `unlocked` transformer layers."""
    tower = model.text_tower
    for p in tower.parameters():
        p.requires_grad = False
    if unlocked > 0:
        layers = next((m for name, m in tower.named_modules() if name.endswith("layer") and isinstance(m, torch.nn.ModuleList)), None)
        if layers is None:
            raise TmvError("cannot find the text tower's layer list to unlock; use --lock-text-unlocked 0")
        for layer in list(layers)[-unlocked:]:
            for p in layer.parameters():
                p.requires_grad = True


def _checkpoint_activations(model: TinyClip) -> None:
    """Recompute the image tower's activations in the backward pass instead of keeping them: much
    less memory, for about a quarter more time per step. The text tower is left alone: its
    activations are small next to the image tower's at any caption length up to the usual 77 tokens."""
    if not hasattr(model.image_tower, "set_grad_checkpointing"):
        raise TmvError(f"image tower {model.image_arch} has no gradient checkpointing; leave grad_checkpointing off")
    model.image_tower.set_grad_checkpointing(True)


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


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warmup to 1, then cosine decay to `min_ratio`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


# ---------------------------------------------------------------------------------- trainer state


def _trainer_state(optimizer: torch.optim.Optimizer, epoch: int, step: int, best: float | None):
    sd = optimizer.state_dict()
    tensors = {f"optim.{pid}.{k}": v for pid, st in sd["state"].items() for k, v in st.items() if torch.is_tensor(v)}
    tensors["rng.torch"] = torch.get_rng_state()
    info = {"epoch": epoch, "step": step, "best": best, "param_groups": sd["param_groups"],
            "python_rng": json.loads(json.dumps(random.getstate()))}
    return tensors, info


def _restore_trainer_state(optimizer: torch.optim.Optimizer, tensors: dict, info: dict) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": info["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    version, internal, gauss = info["python_rng"]
    random.setstate((version, tuple(internal), gauss))


# ------------------------------------------------------------------------------------------ training


def _train_mode(model: TinyClip, cfg: TrainConfig) -> None:
    """Train mode, except that a locked tower stays in eval mode: its batch-norm statistics and
    dropout stay as pretrained."""
    model.train()
    if cfg.lock_image:
        model.image_tower.eval()
    if cfg.lock_text:
        model.text_tower.eval()


def load_validation(cfg: TrainConfig) -> PairSet | None:
    """A run's validation set alone (for `tmv eval`): with `val_fraction`, the training images are
    split off by key without being decoded."""
    if cfg.val_data is not None:
        return require_pairs(load_pairs(cfg.val_data, cfg.image_root, cfg.image_column, cfg.caption_column,
                                        cfg.val_split or ("val" if cfg.val_data == cfg.data else None)))
    if cfg.val_fraction > 0:
        pairs = load_pairs(cfg.data, cfg.image_root, cfg.image_column, cfg.caption_column, cfg.split, check_images=False)
        _, val = pairs.split(cfg.val_fraction)
        return drop_unreadable(val) if len(val) else None
    return None


def load_datasets(cfg: TrainConfig) -> tuple[PairSet, PairSet | None]:
    pairs = require_pairs(load_pairs(cfg.data, cfg.image_root, cfg.image_column, cfg.caption_column, cfg.split))
    if cfg.val_data is not None:
        return pairs, load_validation(cfg)
    if cfg.val_fraction > 0:
        train, val = pairs.split(cfg.val_fraction)
        train.skipped = pairs.skipped
        if len(train) < 2:
            raise TmvError(f"{pairs.name}: too few images ({len(pairs)}) to hold out a validation split; use --val-fraction 0")
        return train, (val if len(val) else None)
    return pairs, None


def _train_data_config(model: TinyClip, size: int | None) -> dict:
    """The tower's data config with training crops at `size`: a convolutional tower trained on
    smaller crops than it is evaluated on runs several times faster, and sees objects at about the
    scale that the larger centre-cropped evaluation view shows them (FixRes)."""
    if size is None:
        return model.data_config
    tower = model.image_tower
    if hasattr(tower, "patch_embed") and not getattr(tower, "dynamic_img_size", False):
        raise TmvError(f"train_image_size needs an image tower that takes any input size; {model.image_arch} "
                       f"takes only {model.data_config['input_size'][-1]} px (leave train_image_size unset)")
    return {**model.data_config, "input_size": [3, size, size]}


def score(metrics: dict[str, float]) -> float:
    """What `best` maximises: the mean of R@1, R@5 and R@10 over both directions."""
    keys = [f"{d}_R@{k}" for d in ("t2i", "i2t") for k in (1, 5, 10)]
    return sum(metrics[k] for k in keys) / len(keys)


class _Embed(nn.Module):
    """What DDP wraps: a batch to both embeddings and the temperature in one forward, since DDP
    synchronises the gradients of what its wrapped module's forward computed."""

    def __init__(self, model: TinyClip, cached: bool, channels_last: bool) -> None:
        super().__init__()
        self.model, self.cached, self.channels_last = model, cached, channels_last

    def forward(self, images: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor):
        if self.cached:
            image_emb = self.model.project_image(images)
        else:
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            image_emb = self.model.encode_image(images)
        return image_emb, self.model.encode_text(ids, mask), self.model.scale()


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """Augmentation and dropout randomness of one rank in one epoch."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _append_jsonl(path: Path, record: dict, sync: bool = False) -> None:
    """Append one line. Step lines are only flushed (a killed process loses none of them); the epoch
    line is synced to disk, after that epoch's checkpoints, which is where a resume starts from."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()
        if sync:
            os.fsync(fh.fileno())


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drop log lines past the checkpoint a resumed run restarts from."""
    if not path.exists():
        return
    keep = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= last_step]
    write_text(path, "".join(line + "\n" for line in keep))


def run_dir_for(cfg: TrainConfig) -> Path:
    if cfg.out_dir:
        return Path(cfg.out_dir)
    from .checkpoint import runs_root

    return runs_root() / time.strftime("%Y%m%d-%H%M%S")


def resume_path(cfg: TrainConfig, run_dir: Path) -> Path:
    path = run_dir / LATEST if cfg.resume == "latest" else Path(cfg.resume)
    if not path.is_file():
        raise TmvError(f"cannot resume: {path} does not exist (a run writes {LATEST} after its first epoch)")
    return path


def train(cfg: TrainConfig, reporter: Reporter | None = None) -> Path:
    """Run training; returns the run folder. Under torchrun, call it on every rank: the reporter
    hears only rank 0's progress, with global figures."""
    with distributed.session(cfg.device) as (info, device):
        return _train(cfg, reporter if info.is_main else None, info, device)


def _train(cfg: TrainConfig, reporter: Reporter | None, info: Dist, device: torch.device) -> Path:
    import yaml

    reporter = reporter or Reporter()
    main, world = info.is_main, info.world_size
    precision = resolve_precision(device, cfg.precision)
    run_dir = Path(distributed.broadcast_text(str(run_dir_for(cfg)), device))
    _seed_all(cfg.seed)

    train_pairs, val_pairs = load_datasets(cfg)
    reporter.skipped(train_pairs)
    if val_pairs is not None and val_pairs.skipped:
        reporter.skipped(val_pairs)
    if len(train_pairs) < world:
        raise TmvError(f"{len(train_pairs)} training images are too few for {world} processes")

    state_tensors, state_info = {}, None
    if cfg.resume:
        model, tokenizer, meta, state_tensors = load_checkpoint(resume_path(cfg, run_dir), with_state=True)
        state_info = meta.get("trainer_state")
        if state_info is None:
            raise TmvError(f"{cfg.resume} holds weights only; resume from the run's {LATEST}")
        model.train()
    else:
        model, tokenizer = create_model(cfg.model)
    model.to(device)
    if cfg.lock_image:
        _lock_image(model, cfg.lock_image_unlocked)
    if cfg.lock_text:
        _lock_text(model, cfg.lock_text_unlocked)
    if cfg.grad_checkpointing and any(p.requires_grad for p in model.image_tower.parameters()):
        _checkpoint_activations(model)

    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        for stale in run_dir.glob(".*.tmp"):  # a checkpoint write cut short by a kill
            stale.unlink(missing_ok=True)
        write_text(run_dir / CONFIG, yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    train_tf = build_transforms(_train_data_config(model, cfg.train_image_size), training=True)
    tokens = pretokenize(tokenizer, train_pairs.captions, model.config.context_length)
    cached = cfg.lock_image and cfg.lock_image_unlocked == 0 and cfg.cache_image_features
    val_features = None
    if cached:
        # Every rank computes every view with the same seed, so all hold the same cache.
        reporter.notice(f"caching locked image-tower features: {cfg.image_views} view(s) (one un-augmented) of {len(train_pairs)} images")
        eval_tf = build_transforms(model.data_config, training=False)
        feats = image_features(model, train_pairs, train_tf, cfg.image_views, cfg.batch_size * 2, cfg.workers,
                               precision, device, cfg.seed, clean=eval_tf)
        dataset = FeatureDataset(feats, train_pairs.captions, tokens)
        if val_pairs is not None and main:
            val_features = image_features(model, val_pairs, eval_tf, 1, cfg.batch_size * 2, cfg.workers, precision,
                                          device)[:, 0]
    else:
        dataset = PairDataset(train_pairs, train_tf, tokens)
    collate = Collate(tokenizer.pad_token_id or 0, model.config.context_length if cfg.pad_to_max else None)
    # Each rank takes every world-th item of one shared order, after the tail is cut to a multiple of
    # the world size: equal batches on every rank, global batches as one process with world x batch.
    sampler = DistributedSampler(dataset, num_replicas=world, rank=info.rank, shuffle=True, seed=cfg.seed, drop_last=True)
    per_rank = len(sampler)
    drop_last = per_rank > cfg.batch_size
    batches_per_epoch = per_rank // cfg.batch_size if drop_last else 1
    steps_per_epoch = max(1, batches_per_epoch // cfg.accum_steps)
    total_steps = steps_per_epoch * cfg.epochs

    # fused: one kernel over all parameters, faster and without foreach's temporary copies
    optimizer = torch.optim.AdamW(param_groups(model, cfg), betas=(0.9, 0.98), eps=1e-6, fused=True)
    start_epoch, step, best = 0, 0, None
    if state_info is not None:
        _restore_trainer_state(optimizer, state_tensors, state_info)
        start_epoch, step, best = state_info["epoch"], state_info["step"], state_info["best"]
        if main:
            _truncate_metrics(run_dir / METRICS, step)
        if start_epoch >= cfg.epochs:
            reporter.notice(f"run already finished {start_epoch} epochs; raise --epochs to train more")
            return run_dir
    elif main and (run_dir / METRICS).exists():
        (run_dir / METRICS).unlink()

    net: nn.Module = _Embed(model, cached, cfg.channels_last)
    if world > 1:
        net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    reporter.start(total_steps, step, {"train_images": len(train_pairs), "train_captions": train_pairs.num_captions,
                                       "val_images": len(val_pairs) if val_pairs else 0, "device": str(device),
                                       "processes": world, "run_dir": str(run_dir),
                                       "label_prior": model.label_prior.classes if model.label_prior is not None else 0})
    trainable = [p for p in model.parameters() if p.requires_grad]
    for epoch in range(start_epoch, cfg.epochs):
        _train_mode(model, cfg)
        seed = _epoch_seed(cfg.seed, epoch, info.rank)
        torch.manual_seed(seed)
        dataset.set_epoch(cfg.seed, epoch)
        sampler.set_epoch(epoch)
        loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, drop_last=drop_last,
                            num_workers=0 if cached else cfg.workers, collate_fn=collate, persistent_workers=False,
                            generator=torch.Generator().manual_seed(seed))
        epoch_loss, epoch_pairs, started = 0.0, 0, time.perf_counter()
        micro = 0
        for images, ids, mask in loader:
            if micro == 0:
                factor = lr_factor(step, total_steps, cfg.warmup_steps, cfg.min_lr_ratio)
                for group in optimizer.param_groups:
                    group["lr"] = group["base_lr"] * factor
                step_loss = 0.0
            micro += 1
            # Ranks exchange gradients once per optimiser step, on its last micro-batch.
            local_only = world > 1 and micro < cfg.accum_steps
            with net.no_sync() if local_only else contextlib.nullcontext():
                with autocast(device, precision):
                    image_emb, text_emb, scale = net(images.to(device), ids.to(device), mask.to(device))
                    loss = global_contrastive_loss(image_emb, text_emb, scale, cfg.local_loss)
                (loss / cfg.accum_steps).backward()
            step_loss += loss.item() / cfg.accum_steps
            epoch_pairs += len(images) * world
            if micro < cfg.accum_steps:
                continue
            micro = 0
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            model.clamp_logit_scale()
            step += 1
            step_loss = distributed.mean(step_loss, device)
            epoch_loss += step_loss
            rate = epoch_pairs / max(time.perf_counter() - started, 1e-9)
            lr = max(group["lr"] for group in optimizer.param_groups)
            if main:
                _append_jsonl(run_dir / METRICS, {"type": "step", "step": step, "epoch": epoch + 1,
                                                  "loss": step_loss, "lr": lr})
            reporter.step(step, epoch + 1, step_loss, lr, rate)
        optimizer.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - started
        if main:
            record = {"type": "epoch", "step": step, "epoch": epoch + 1, "train_loss": epoch_loss / steps_per_epoch,
                      "pairs_per_s": epoch_pairs / max(elapsed, 1e-9), "epoch_seconds": elapsed,
                      "logit_scale": float(model.scale().detach())}
            best = _end_epoch(cfg, model, tokenizer, optimizer, reporter, run_dir, val_pairs, val_features, device,
                              precision, record, best)
        distributed.barrier()
    return run_dir


def _end_epoch(cfg: TrainConfig, model: TinyClip, tokenizer, optimizer: torch.optim.Optimizer, reporter: Reporter,
               run_dir: Path, val_pairs: PairSet | None, val_features: torch.Tensor | None, device: torch.device,
               precision: str, record: dict, best: float | None) -> float | None:
    """Rank 0's end of an epoch: validation, checkpoints, the log line. Returns the best score."""
    epoch, step = record["epoch"], record["step"]
    if val_pairs is not None:
        reporter.validating(epoch)
        # At the training batch size: inference at the evaluation size must not raise the run's peak memory.
        record["val"] = evaluate(model, tokenizer, val_pairs, cfg.batch_size, precision, device, cfg.workers,
                                 features=val_features)
    current = score(record["val"]) if "val" in record else None
    improved = current is None or best is None or current > best
    if improved:
        best = current
    info = {"epoch": epoch, "step": step, "metrics": record.get("val", {}), "train_loss": record["train_loss"]}
    if epoch % cfg.save_every == 0 or epoch == cfg.epochs:
        save_checkpoint(run_dir / f"epoch_{epoch:03d}.safetensors", model, tokenizer, info)
    if improved:
        save_checkpoint(run_dir / BEST, model, tokenizer, info)
    save_checkpoint(run_dir / LATEST, model, tokenizer, info, _trainer_state(optimizer, epoch, step, best))
    _append_jsonl(run_dir / METRICS, record, sync=True)
    reporter.epoch_end(record)
    return best
