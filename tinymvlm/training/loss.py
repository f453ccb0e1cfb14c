"""Symmetric InfoNCE: each image should pick out its caption in the batch, and each caption its image.

Under torchrun the batch is the global one: every rank's features are gathered with gradients.
Either every rank computes the full global loss, or (`local_loss`, cheaper: B x N logits instead of
N x N) only the rows of its own images and captions against all. Both give exactly the gradient of
the global loss once DDP averages the ranks (see `gather_with_grad`), so training matches one
process with the whole global batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tinymvlm import distributed


def contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    logits = scale * image_emb @ text_emb.t()
    labels = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def local_contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, all_images: torch.Tensor,
                           all_texts: torch.Tensor, scale: torch.Tensor, offset: int) -> torch.Tensor:
    """This rank's rows of the global loss: its images against all captions, its captions against
    all images; its pairs sit at rows offset.. of the gathered tensors. The mean over ranks is the
    global loss."""
    labels = torch.arange(len(image_emb), device=image_emb.device) + offset
    return (F.cross_entropy(scale * image_emb @ all_texts.t(), labels)
            + F.cross_entropy(scale * text_emb @ all_images.t(), labels)) / 2


def global_contrastive_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, scale: torch.Tensor,
                            local_loss: bool = False) -> torch.Tensor:
    """The contrastive loss over all ranks' pairs (just `contrastive_loss` in a single process)."""
    if not distributed.active():
        return contrastive_loss(image_emb, text_emb, scale)
    all_images, all_texts = distributed.gather_with_grad(image_emb), distributed.gather_with_grad(text_emb)
    if local_loss:
        offset = distributed.from_env().rank * len(image_emb)
        return local_contrastive_loss(image_emb, text_emb, all_images, all_texts, scale, offset)
    return contrastive_loss(all_images, all_texts, scale)
