"""A run's data: the seeded sample of its source (`samples`), and the train/validation split made from
it. Training and `tmv eval` (which reads the validation side) both come here, so both see the same
images."""

from __future__ import annotations

from typing import Callable

import numpy as np

from tinymvlm.data.pairs import PairSet, drop_unreadable, load_pairs, require_pairs, sample_stream, streamable_source
from tinymvlm.errors import TmvError
from tinymvlm.training.config import TrainConfig

Notice = Callable[[str], None]
SAMPLE_STREAM = 5  # keeps the sample's random numbers apart from the run's other seeded choices


def sample(pairs: PairSet, count: int, seed: int, notice: Notice = lambda message: None) -> PairSet:
    """`count` images of `pairs`, each with all its captions, chosen by a permutation seeded with
    `seed`. Only images drawn are decoded (to drop unreadable ones, whose places go to the next
    images of the permutation). More than there are means all of them, with a notice."""
    if count >= len(pairs):
        notice(f"--samples {count} is more than the {len(pairs)} images of {pairs.name}: training on all of them")
        return drop_unreadable(pairs)
    where = {key: i for i, key in enumerate(pairs.keys)}
    order = np.random.default_rng([seed, SAMPLE_STREAM]).permutation(len(pairs))
    chosen: list[int] = []
    skipped = list(pairs.skipped)
    start = 0
    while len(chosen) < count and start < len(order):
        draw = order[start:start + count - len(chosen)]
        start += len(draw)
        readable = drop_unreadable(pairs.subset(sorted(draw.tolist())))
        chosen += [where[key] for key in readable.keys]
        skipped += readable.skipped
    return pairs.subset(sorted(chosen), f"{pairs.name} (sample of {count})", skipped=skipped)


def _source(cfg: TrainConfig, notice: Notice, check_images: bool = True) -> PairSet:
    """The training source as configured: all of it, or its sample (streamed from datasets that a
    Hugging Face loader reads, so that a sample of a large hub dataset downloads little of it)."""
    if cfg.samples is None:
        return load_pairs(cfg.data, cfg.image_root, cfg.image_column, cfg.caption_column, cfg.split, check_images)
    dataset = streamable_source(cfg.data)
    if dataset is not None:
        pairs, rows = sample_stream(dataset, cfg.split or ("train" if cfg.data is None else None), cfg.image_column,
                                    cfg.caption_column, cfg.samples, cfg.seed)
        if len(pairs) < cfg.samples:
            notice(f"--samples {cfg.samples} is more than the {len(pairs)} images of {dataset}: training on all of them")
        else:
            notice(f"--samples {cfg.samples}: drawn from the first {rows} rows streamed from {dataset}")
        return pairs
    pairs = load_pairs(cfg.data, cfg.image_root, cfg.image_column, cfg.caption_column, cfg.split, check_images=False)
    return sample(pairs, cfg.samples, cfg.seed, notice)


def load_validation(cfg: TrainConfig) -> PairSet | None:
    """A run's validation set alone (for `tmv eval`): with `val_fraction`, the training images are
    split off by a hash of each image's stored bytes (read, not decoded; see `PairSet.split`)."""
    if cfg.val_data is not None:
        return require_pairs(load_pairs(cfg.val_data, cfg.image_root, cfg.image_column, cfg.caption_column,
                                        cfg.val_split or ("val" if cfg.val_data == cfg.data else None)))
    if cfg.val_fraction > 0:
        pairs = _source(cfg, lambda message: None, check_images=False)
        _, val = pairs.split(cfg.val_fraction)
        return drop_unreadable(val) if len(val) else None
    return None


def load_datasets(cfg: TrainConfig, notice: Notice = lambda message: None) -> tuple[PairSet, PairSet | None]:
    """(training pairs, validation pairs or None) of a run."""
    pairs = require_pairs(_source(cfg, notice))
    if cfg.val_data is not None:
        return pairs, load_validation(cfg)
    if cfg.val_fraction > 0:
        train, val = pairs.split(cfg.val_fraction)
        if len(train) < 2:
            raise TmvError(f"{pairs.name}: too few images ({len(pairs)}) to hold out a validation split; use --val-fraction 0")
        return train, (val if len(val) else None)
    return pairs, None
