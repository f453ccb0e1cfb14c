"""What a training step reads: per-epoch datasets of pixels (or cached locked-tower features) with one
pre-tokenised caption per image, and the collation of a batch."""

from __future__ import annotations

import random
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from tinymvlm.data.pairs import PairSet
from tinymvlm.errors import TmvError
from tinymvlm.inference.runtime import autocast
from tinymvlm.models.tinyclip import TinyClip


def augment(transform, image, key: list[int]) -> torch.Tensor:
    """`transform(image)` with its randomness (Python's and torch's) seeded from `key` alone: a
    sample's crop depends on which sample it is, never on the process, DataLoader worker or batch
    that happens to transform it, so N processes see the crops one process would."""
    state = random.getstate()
    seed = int(np.random.SeedSequence(key).generate_state(1)[0])
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        torch.default_generator.manual_seed(seed)  # the CPU's alone: torch.manual_seed costs ~1 ms, for every device
        try:
            return transform(image)
        finally:
            random.setstate(state)


class PairDataset(Dataset):
    """One item per image: its pixels, augmented as seeded by (seed, epoch, image), and one of its
    captions, pre-tokenised, chosen per epoch. `images` is where pixels come from, when not the pairs'
    own files (an `image_cache.ImageCache`, with a transform that takes what it opens)."""

    def __init__(self, pairs: PairSet, transform, token_ids: list[list[list[int]]], images=None) -> None:
        self.pairs, self.transform, self.token_ids = pairs, transform, token_ids
        self.images = pairs.images if images is None else images
        self.choice = [0] * len(pairs)
        self.key = [0, 0]

    def set_epoch(self, seed: int, epoch: int) -> None:
        rng = np.random.default_rng([seed, epoch])
        self.choice = [int(rng.integers(len(c))) for c in self.pairs.captions]
        self.key = [seed, epoch]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int):
        return augment(self.transform, self.images.open(i), [*self.key, i]), self.token_ids[i][self.choice[i]]


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

    def __init__(self, pairs: PairSet, transform, views: int, seed: int, clean=None) -> None:
        self.pairs, self.transform, self.views, self.seed, self.clean = pairs, transform, views, seed, clean

    def __len__(self) -> int:
        return len(self.pairs) * self.views

    def __getitem__(self, k: int) -> torch.Tensor:
        transform = self.clean if self.clean is not None and k % self.views == 0 else self.transform
        return augment(transform, self.pairs.images.open(k // self.views), [self.seed, k])


@torch.inference_mode()
def image_features(model: TinyClip, pairs: PairSet, transform, views: int = 1, batch_size: int = 64,
                   workers: int = 0, precision: str = "fp32", device: torch.device | str = "cpu",
                   seed: int = 0, clean=None, on_images: Callable[[int], None] | None = None) -> torch.Tensor:
    """Pooled image-tower features, shape (images, views, features); each view's augmentation is
    seeded by (seed, view), whatever the batch size and workers. `on_images` hears each batch's size."""
    model.image_tower.eval()
    loader = DataLoader(_Views(pairs, transform, views, seed, clean), batch_size=batch_size, num_workers=workers)
    chunks = []
    for pixels in loader:
        pixels = pixels.to(device).contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            chunks.append(model.image_features(pixels).float().cpu())
        if on_images is not None:
            on_images(len(pixels))
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
    """Every caption's token ids, once for the whole run, grouped per image."""
    flat = [c for caps in captions for c in caps]
    ids = tokenizer(flat, truncation=True, max_length=context_length)["input_ids"] if flat else []
    out, pos = [], 0
    for caps in captions:
        out.append(ids[pos:pos + len(caps)])
        pos += len(caps)
    return out


def train_data_config(model: TinyClip, size: int | None) -> dict:
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
