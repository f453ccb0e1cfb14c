"""Contrastive training of one run: `setup` builds its state, `train_epoch` trains one epoch,
`end_epoch` validates, checkpoints and logs it (the split of open_clip's trainer).

Every epoch's randomness (sample order, caption choice, augmentation, dropout) is derived from
(seed, epoch), so `resume="latest"` replays the remaining epochs exactly as an uninterrupted run.

Under torchrun every rank runs `train`: DistributedDataParallel, each rank a shard of every epoch's
order (so N ranks with batch B see the global batches one process with batch N*B would, each image
cropped as seeded by (seed, epoch, image)), the loss over the global batch; rank 0 alone validates,
logs, reports and writes checkpoints. Dropout alone is drawn per rank.
"""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from tinymvlm import distributed, run_folder
from tinymvlm.data.pairs import PairSet
from tinymvlm.data.transform import build_transforms
from tinymvlm.distributed import Dist
from tinymvlm.errors import TmvError
from tinymvlm.evaluation.retrieval import evaluate
from tinymvlm.inference.runtime import Runtime
from tinymvlm.models.checkpoint import load_checkpoint, save_checkpoint
from tinymvlm.models.factory import create_model
from tinymvlm.models.resolve import resolve_model
from tinymvlm.models.tinyclip import TinyClip
from tinymvlm.training import curves, freeze, image_cache, run_config, scalars, wiseft
from tinymvlm.training.batches import (
    Collate,
    FeatureDataset,
    PairDataset,
    image_features,
    pretokenize,
    train_data_config,
)
from tinymvlm.training.config import TrainConfig
from tinymvlm.training.curves import selection_score
from tinymvlm.training.loss import global_contrastive_loss
from tinymvlm.training.optim import create_optimizer, lr_factor, restore_trainer_state, set_lr, trainer_state
from tinymvlm.training.splits import load_datasets

__all__ = ["Reporter", "TrainConfig", "TrainState", "end_epoch", "setup", "train", "train_epoch"]


class Reporter:
    """Receives progress; the CLI draws it. The library itself never prints."""

    def notice(self, message: str) -> None: ...
    def skipped(self, pairs: PairSet) -> None: ...
    def start(self, total_steps: int, start_step: int, info: dict) -> None: ...
    def step(self, step: int, epoch: int, loss: float, lr: float, pairs_per_s: float) -> None: ...
    def validating(self, epoch: int) -> None: ...
    def work_started(self, description: str, total: int, unit: str) -> None: ...  # a long step outside the steps
    def work_advanced(self, count: int) -> None: ...
    def work_finished(self) -> None: ...
    def epoch_end(self, record: dict) -> None: ...


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


@dataclass
class TrainState:
    """Everything the epochs of one run share, built by `setup`."""

    cfg: TrainConfig
    info: Dist
    runtime: Runtime  # the run's device and precision, resolved once
    run_dir: Path
    log: run_folder.MetricsLog
    reporter: Reporter
    model: TinyClip
    tokenizer: object
    train_pairs: PairSet
    val_pairs: PairSet | None
    val_features: torch.Tensor | None
    dataset: Dataset
    collate: Collate
    sampler: DistributedSampler
    drop_last: bool
    cached: bool
    steps_per_epoch: int
    total_steps: int
    optimizer: torch.optim.Optimizer
    net: nn.Module
    start_epoch: int = 0
    step: int = 0
    best: float | None = None
    start_weights: dict[str, torch.Tensor] | None = None  # what the saved models mix with (wiseft)
    tensorboard: scalars.Scalars | None = None  # --tensorboard, on rank 0

    @property
    def finished(self) -> bool:
        return self.start_epoch >= self.cfg.epochs


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """Dropout randomness of one rank in one epoch (augmentation is seeded per sample: batches.augment)."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(cfg: TrainConfig, reporter: Reporter | None = None, given: Iterable[str] | None = None) -> Path:
    """Run training; returns the run folder. With `cfg.resume`, the run continues with its own
    options, overridden by those of `cfg` named in `given` (default: those not at their defaults;
    see `run_config.resumed_config`). Under torchrun, call it on every rank: the reporter hears only rank
    0's progress, with global figures."""
    cfg = run_config.resumed_config(cfg, given)
    with distributed.session(cfg.device) as (info, device):
        state = setup(cfg, reporter if info.is_main else None, info, device)
        if state.finished:
            state.reporter.notice(f"run already finished {state.start_epoch} epochs; raise --epochs to train more")
            return state.run_dir
        state.reporter.start(state.total_steps, state.step, {
            "train_images": len(state.train_pairs), "train_captions": state.train_pairs.num_captions,
            "val_images": len(state.val_pairs) if state.val_pairs else 0, "device": str(device),
            "processes": info.world_size, "run_dir": str(state.run_dir),
            "label_prior": state.model.label_prior.classes if state.model.label_prior is not None else 0,
            "people": state.model.reads_people})
        try:
            for epoch in range(state.start_epoch, cfg.epochs):
                record = train_epoch(state, epoch)
                if info.is_main:
                    end_epoch(state, record)
                distributed.barrier()
        finally:
            if state.tensorboard is not None:
                state.tensorboard.close()
        return state.run_dir


def setup(cfg: TrainConfig, reporter: Reporter | None, info: Dist, device: torch.device) -> TrainState:
    """Data, model, optimiser and (when resuming) the trainer state of a run, on this rank; rank 0
    prepares the run folder. Each step below builds one part of the state."""
    reporter = reporter or Reporter()
    if cfg.tensorboard:
        scalars.require()
    runtime = Runtime.on(device, cfg.precision, batch_size=cfg.batch_size, workers=cfg.workers)
    run_dir = Path(distributed.broadcast_text(str(run_folder.new_run_dir(cfg.out_dir)), device))
    _seed_all(cfg.seed)
    train_pairs, val_pairs = _load_pairs(cfg, reporter, info)
    model, tokenizer, resumed = _load_model(cfg, device)
    start = _prepare_run_folder(cfg, run_dir, model, tokenizer, info, device)
    data = _training_data(cfg, model, tokenizer, train_pairs, val_pairs, runtime, run_dir, info, reporter)
    sampler, drop_last, steps_per_epoch = _sampling(cfg, data.dataset, info)
    optimizer = create_optimizer(model, cfg)
    log = run_folder.MetricsLog(run_dir)
    start_epoch, step, best = _restore(resumed, optimizer, log, info)
    net: nn.Module = _Embed(model, data.cached, cfg.channels_last)
    if info.world_size > 1 and start_epoch < cfg.epochs:
        net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    return TrainState(cfg=cfg, info=info, runtime=runtime, run_dir=run_dir, log=log, reporter=reporter, model=model,
                      tokenizer=tokenizer, train_pairs=train_pairs, val_pairs=val_pairs,
                      val_features=data.val_features, dataset=data.dataset, collate=data.collate, sampler=sampler,
                      drop_last=drop_last, cached=data.cached, steps_per_epoch=steps_per_epoch,
                      total_steps=steps_per_epoch * cfg.epochs, optimizer=optimizer, net=net,
                      start_epoch=start_epoch, step=step, best=best, start_weights=start,
                      tensorboard=scalars.Scalars(run_dir) if cfg.tensorboard and info.is_main else None)


def _load_pairs(cfg: TrainConfig, reporter: Reporter, info: Dist) -> tuple[PairSet, PairSet | None]:
    """The training and validation pairs, their skipped rows reported."""
    train_pairs, val_pairs = load_datasets(cfg, reporter.notice)
    reporter.skipped(train_pairs)
    if val_pairs is not None and val_pairs.skipped:
        reporter.skipped(val_pairs)
    if len(train_pairs) < info.world_size:
        raise TmvError(f"{len(train_pairs)} training images are too few for {info.world_size} processes")
    return train_pairs, val_pairs


@dataclass
class _Resumed:
    """What a resumed run's latest checkpoint holds besides the weights."""

    tensors: dict[str, torch.Tensor]
    info: dict


def _load_model(cfg: TrainConfig, device: torch.device) -> tuple[TinyClip, object, _Resumed | None]:
    """The model the run trains: the resumed run's, the base model, or new heads on the towers; locked
    as configured."""
    resumed = None
    if cfg.resume:
        model, tokenizer, meta, tensors = load_checkpoint(run_config.resume_checkpoint(cfg), with_state=True)
        if meta.get("trainer_state") is None:
            raise TmvError(f"{cfg.resume} holds weights only; resume from the run's {run_folder.LATEST}")
        resumed = _Resumed(tensors, meta["trainer_state"])
        model.train()
    elif cfg.base_model:
        model, tokenizer, _ = load_checkpoint(resolve_model(cfg.base_model))
        model.train()
    else:
        model, tokenizer = create_model(cfg.model)
    model.to(device)
    freeze.prepare(model, cfg)
    return model, tokenizer, resumed


def _prepare_run_folder(cfg: TrainConfig, run_dir: Path, model: TinyClip, tokenizer, info: Dist,
                        device: torch.device) -> dict[str, torch.Tensor] | None:
    """Rank 0 makes the run folder and writes its config (and, for WiSE-FT, the starting weights);
    returns the weights the saved models mix with."""
    if not info.is_main:
        return None
    run_dir.mkdir(parents=True, exist_ok=True)
    run_folder.clear_stale(run_dir)
    run_config.write_config(run_dir, cfg)
    if cfg.wise_alpha >= 1:
        return None
    if not cfg.resume:
        save_checkpoint(run_dir / wiseft.START, model, tokenizer, {"epoch": 0, "step": 0})
    return wiseft.start_weights(run_dir / wiseft.START, device)


@dataclass
class _TrainingData:
    dataset: Dataset
    collate: Collate
    cached: bool  # the dataset holds locked image-tower features, not pixels
    val_features: torch.Tensor | None


def _training_data(cfg: TrainConfig, model: TinyClip, tokenizer, train_pairs: PairSet, val_pairs: PairSet | None,
                   runtime: Runtime, run_dir: Path, info: Dist, reporter: Reporter) -> _TrainingData:
    """What a step reads: cached locked-tower features, crops from the image cache, or decoded files."""
    train_tf = build_transforms(train_data_config(model, cfg.train_image_size), training=True)
    tokens = pretokenize(tokenizer, train_pairs.captions, model.config.context_length)
    collate = Collate(tokenizer.pad_token_id or 0, model.config.context_length if cfg.pad_to_max else None)
    cached = cfg.lock_image and cfg.lock_image_unlocked == 0 and cfg.cache_image_features
    if cached:
        # Every rank computes every view with the same seed, so all hold the same cache.
        reporter.notice(f"caching locked image-tower features: {cfg.image_views} view(s) (one un-augmented) of {len(train_pairs)} images"
                        + (" (so no --image-cache: it is for runs that train the image tower)" if cfg.image_cache else ""))
        eval_tf = build_transforms(model.data_config, training=False)
        device, batch = runtime.torch_device, cfg.batch_size * 2
        reporter.work_started("caching image-tower features", len(train_pairs) * cfg.image_views, "images")
        feats = image_features(model, train_pairs, train_tf, cfg.image_views, batch, cfg.workers,
                               runtime.precision, device, cfg.seed, clean=eval_tf, on_images=reporter.work_advanced)
        reporter.work_finished()
        val_features = None
        if val_pairs is not None and info.is_main:
            reporter.work_started("caching validation features", len(val_pairs), "images")
            val_features = image_features(model, val_pairs, eval_tf, 1, batch, cfg.workers, runtime.precision,
                                          device, on_images=reporter.work_advanced)[:, 0]
            reporter.work_finished()
        return _TrainingData(FeatureDataset(feats, train_pairs.captions, tokens), collate, True, val_features)
    if not cfg.image_cache:
        return _TrainingData(PairDataset(train_pairs, train_tf, tokens), collate, False, None)
    crop = train_data_config(model, cfg.train_image_size)["input_size"][-1]
    if info.is_main:
        cache = image_cache.for_run(train_pairs, crop, run_dir, cfg.workers, True, reporter.notice)
    distributed.barrier()
    if not info.is_main:
        cache = image_cache.for_run(train_pairs, crop, run_dir, cfg.workers, False)
    return _TrainingData(PairDataset(train_pairs, image_cache.CachedCrop(train_tf), tokens, cache), collate, False, None)


def _sampling(cfg: TrainConfig, dataset: Dataset, info: Dist) -> tuple[DistributedSampler, bool, int]:
    """This rank's sampler, whether batches drop the tail, and optimiser steps per epoch. Each rank takes
    every world-th item of one shared order, after the tail is cut to a multiple of the world size:
    equal batches on every rank, global batches as one process with world x batch."""
    sampler = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=cfg.seed,
                                 drop_last=True)
    per_rank = len(sampler)
    drop_last = per_rank > cfg.batch_size
    batches_per_epoch = per_rank // cfg.batch_size if drop_last else 1
    return sampler, drop_last, max(1, batches_per_epoch // cfg.accum_steps)


def _restore(resumed: _Resumed | None, optimizer: torch.optim.Optimizer, log: run_folder.MetricsLog,
             info: Dist) -> tuple[int, int, float | None]:
    """(start epoch, step, best score): a resumed run's, its optimiser state restored and its log cut back
    to its checkpoint; a new run's zeros, its log cleared."""
    if resumed is None:
        if info.is_main:
            log.clear()
        return 0, 0, None
    restore_trainer_state(optimizer, resumed.tensors, resumed.info)
    if info.is_main:
        log.truncate(resumed.info["step"])
    return resumed.info["epoch"], resumed.info["step"], resumed.info["best"]


def train_epoch(state: TrainState, epoch: int) -> dict:
    """One epoch (0-based) on this rank; returns its log record (global figures)."""
    cfg, model, optimizer, device = state.cfg, state.model, state.optimizer, state.runtime.torch_device
    world = state.info.world_size
    freeze.train_mode(model, cfg)
    seed = _epoch_seed(cfg.seed, epoch, state.info.rank)
    torch.manual_seed(seed)
    state.dataset.set_epoch(cfg.seed, epoch)
    state.sampler.set_epoch(epoch)
    loader = DataLoader(state.dataset, batch_size=cfg.batch_size, sampler=state.sampler, drop_last=state.drop_last,
                        num_workers=0 if state.cached else cfg.workers, collate_fn=state.collate,
                        pin_memory=device.type == "cuda", persistent_workers=False,
                        generator=torch.Generator().manual_seed(seed))
    trainable = [p for p in model.parameters() if p.requires_grad]
    epoch_loss, epoch_pairs, started = 0.0, 0, time.perf_counter()
    micro = 0
    for images, ids, mask in loader:
        if micro == 0:
            set_lr(optimizer, lr_factor(state.step, state.total_steps, cfg.warmup_steps, cfg.min_lr_ratio))
            step_loss = 0.0
        micro += 1
        # Ranks exchange gradients once per optimiser step, on its last micro-batch.
        local_only = world > 1 and micro < cfg.accum_steps
        with state.net.no_sync() if local_only else contextlib.nullcontext():
            with state.runtime.autocast():
                image_emb, text_emb, scale = state.net(images.to(device, non_blocking=True), ids.to(device),
                                                       mask.to(device))
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
        state.step += 1
        step_loss = distributed.mean(step_loss, device)
        epoch_loss += step_loss
        rate = epoch_pairs / max(time.perf_counter() - started, 1e-9)
        lr = max(group["lr"] for group in optimizer.param_groups)
        if state.info.is_main:
            state.log.append({"type": "step", "step": state.step, "epoch": epoch + 1, "loss": step_loss, "lr": lr})
            if state.tensorboard is not None:
                state.tensorboard.step(state.step, step_loss, lr)
        state.reporter.step(state.step, epoch + 1, step_loss, lr, rate)
    optimizer.zero_grad(set_to_none=True)
    elapsed = time.perf_counter() - started
    return {"type": "epoch", "step": state.step, "epoch": epoch + 1, "train_loss": epoch_loss / state.steps_per_epoch,
            "pairs_per_s": epoch_pairs / max(elapsed, 1e-9), "epoch_seconds": elapsed,
            "logit_scale": float(model.scale().detach())}


def end_epoch(state: TrainState, record: dict) -> None:
    """Rank 0's end of an epoch: validation, checkpoints, the log line; updates the best score."""
    cfg, model, tokenizer = state.cfg, state.model, state.tokenizer
    epoch, step = record["epoch"], record["step"]
    info = {"epoch": epoch, "step": step, "train_loss": record["train_loss"]}
    with wiseft.mixed(model, state.start_weights, cfg.wise_alpha) as saved:
        if state.val_pairs is not None:
            state.reporter.validating(epoch)
            if state.val_features is None:
                state.reporter.work_started(f"epoch {epoch} validating", len(state.val_pairs), "images")
            # At the training batch size: inference at the evaluation size must not raise the run's peak memory.
            record["val"] = evaluate(saved, tokenizer, state.val_pairs, state.runtime, features=state.val_features,
                                     on_images=state.reporter.work_advanced)
            record["val_wise_alpha"] = cfg.wise_alpha  # what was validated: the mix start + alpha x (trained - start)
            state.reporter.work_finished()
        current = selection_score(record["val"]) if "val" in record else None
        improved = current is None or state.best is None or current > state.best
        if improved:
            state.best = current
        info["metrics"] = record.get("val", {})
        if epoch % cfg.save_every == 0 or epoch == cfg.epochs:
            save_checkpoint(run_folder.epoch_checkpoint(state.run_dir, epoch), saved, tokenizer, info)
        if improved:
            save_checkpoint(state.run_dir / run_folder.BEST, saved, tokenizer, info)
    save_checkpoint(state.run_dir / run_folder.LATEST, model, tokenizer, info,
                    trainer_state(state.optimizer, epoch, step, state.best))
    state.log.append(record, sync=True)
    if state.tensorboard is not None:
        state.tensorboard.epoch(record)
    state.reporter.epoch_end(record)
    drawn = curves.draw_curves(state.run_dir)
    if epoch == state.start_epoch + 1:  # this process's first epoch
        state.reporter.notice(f"training curves: {drawn} (redrawn after every epoch)")
