"""open_clip models as tmv towers (the optional extra: pip install 'tinymvlm[openclip]').

The adapters keep open_clip's own `encode_image` / `encode_text` semantics: the image tower is the
model's `visual` (its projection included) and the text tower its `encode_text` (causal, pooled as the
model pools, projected), so the heads are identities. open_clip's BPE tokenizer is carried as the
Hugging Face CLIPTokenizer built from the same vocabulary and merges, which every tmv command and the
checkpoint know how to use; preprocessing is open_clip's, as a timm data config.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import torch
from torch import nn

from tinymvlm.errors import TmvError, first_line
from tinymvlm.models.config import ModelConfig
from tinymvlm.models.tinyclip import TinyClip
from tinymvlm.models.tokenizer import pad_to

EXTRA_HINT = "open_clip models need the optional extra: pip install 'tinymvlm[openclip]'"
_RESIZE_MODES = {"shortest": "center", "squash": "squash", "longest": "border"}


def require_open_clip():
    try:
        import open_clip
    except ImportError as exc:
        raise TmvError(EXTRA_HINT) from exc
    return open_clip


class OpenClipImage(nn.Module):
    """Pixels -> `visual(pixels)`: what `encode_image` returns before normalising."""

    def __init__(self, visual: nn.Module, width: int) -> None:
        super().__init__()
        self.visual = visual
        self.num_features = width

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual(pixels)


class OpenClipText(nn.Module):
    """Token ids -> `encode_text(ids)` of the model, its image half removed, on ids padded to the
    model's context length as open_clip's tokenizer pads them. The text transformer is causal and
    pools at the end-of-text token, so the attention mask is not needed."""

    def __init__(self, clip: nn.Module, pad_token_id: int) -> None:
        super().__init__()
        clip.visual = None
        for name in ("logit_scale", "logit_bias"):  # the model's temperature is TinyClip's own
            if isinstance(getattr(clip, name, None), nn.Parameter):
                delattr(clip, name)
        self.clip = clip
        self.pad_token_id = pad_token_id

    def pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_text(pad_to(input_ids, attention_mask, self.clip.context_length, self.pad_token_id))


def _create(model_cfg: dict) -> nn.Module:
    open_clip = require_open_clip()
    cfg = dict(model_cfg)
    custom = cfg.pop("custom_text", False) or "hf_model_name" in cfg.get("text_cfg", {})
    return open_clip.CustomTextCLIP(**cfg) if custom else open_clip.CLIP(**cfg)


def _assemble(config: ModelConfig, clip: nn.Module, source: dict, data_config: dict) -> TinyClip:
    embed_dim = source["model_cfg"]["embed_dim"]
    image = OpenClipImage(clip.visual, embed_dim)
    text = OpenClipText(clip, source["pad_token_id"])
    return TinyClip(config, image, text, f"open_clip:{source['arch']}", data_config,
                    heads=(nn.Identity(), nn.Identity()), source=source)


def build(config: ModelConfig, source: dict, image_arch: str, data_config: dict) -> TinyClip:
    """The architecture a checkpoint's `source` describes, with random weights (the checkpoint's follow)."""
    return _assemble(config, _create(source["model_cfg"]), source, data_config)


def data_config_of(preprocess_cfg: dict) -> dict:
    """open_clip's preprocessing config as the timm data config our pipeline uses."""
    size = preprocess_cfg["size"]
    height, width = (size, size) if isinstance(size, int) else size
    return {"input_size": [3, int(height), int(width)], "mean": [float(x) for x in preprocess_cfg["mean"]],
            "std": [float(x) for x in preprocess_cfg["std"]], "interpolation": preprocess_cfg["interpolation"],
            "crop_pct": 1.0, "crop_mode": _RESIZE_MODES.get(preprocess_cfg.get("resize_mode", "shortest"), "center")}


def hf_tokenizer(arch: str, context_length: int):
    """open_clip's tokenizer for `arch` as a Hugging Face tokenizer: its own when it is one, else the
    CLIPTokenizer of the same BPE vocabulary and merges."""
    open_clip = require_open_clip()
    from transformers import CLIPTokenizer

    tokenizer = open_clip.get_tokenizer(arch)
    if isinstance(tokenizer, open_clip.tokenizer.HFTokenizer):
        return tokenizer.tokenizer
    if not isinstance(tokenizer, open_clip.tokenizer.SimpleTokenizer):
        raise TmvError(f"open_clip model {arch} uses a {type(tokenizer).__name__}, which tmv cannot carry yet")
    merges = sorted(tokenizer.bpe_ranks, key=tokenizer.bpe_ranks.get)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(tokenizer.encoder), encoding="utf-8")
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
        bos, eos = tokenizer.decoder[tokenizer.sot_token_id], tokenizer.decoder[tokenizer.eot_token_id]
        return CLIPTokenizer(str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"), bos_token=bos,
                             eos_token=eos, pad_token=eos, unk_token=eos, model_max_length=context_length)


def model_cfg(arch: str, tag: str | None) -> dict:
    """The config open_clip builds `arch` from (with quick GELU where the pretrained tag says so)."""
    open_clip = require_open_clip()
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise TmvError(f"unknown open_clip model '{arch}': open_clip.list_models() names them")
    if tag is not None and open_clip.get_pretrained_cfg(arch, tag).get("quick_gelu"):
        cfg["quick_gelu"] = True
    return cfg


def weight_files(filename: str) -> tuple[str, ...]:
    """The files of a tag's hub repo that may hold its weights, in open_clip's own order (safetensors first)."""
    filename = filename or "open_clip_pytorch_model.bin"
    if filename == "open_clip_pytorch_model.bin":
        return "open_clip_model.safetensors", filename
    if filename.endswith((".bin", ".pth")):
        return filename.rsplit(".", 1)[0] + ".safetensors", filename
    return (filename,)


def import_model(arch: str, pretrained: str, ref: str, tag: str | None = None):
    """Return (TinyClip, tokenizer) for open_clip's `arch` with `pretrained` weights: a pretrained tag
    (the caller checked the hub can be reached) or a local checkpoint file."""
    open_clip = require_open_clip()
    cfg = model_cfg(arch, tag)
    try:
        # A tag's weights fetched into a file (models/resolve.py) keep the tag's preprocessing (MobileCLIP: mean 0, std 1).
        tag_cfg = open_clip.get_pretrained_cfg(arch, tag) if tag and tag != pretrained else {}
        overrides = {f"image_{k}": tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if tag_cfg.get(k)}
        clip, _, _ = open_clip.create_model_and_transforms(arch, pretrained=pretrained,
                                                           force_quick_gelu=bool(cfg.get("quick_gelu")), **overrides)
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        raise TmvError(f"could not load {ref}: {first_line(exc)}") from exc
    clip = clip.float().eval()
    context_length = int(cfg.get("text_cfg", {}).get("context_length", 77))
    tokenizer = hf_tokenizer(arch, context_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    source = {"kind": "open_clip", "arch": arch, "model_cfg": cfg, "pad_token_id": int(pad)}
    scale = float(clip.logit_scale.detach())
    config = ModelConfig(image_model=ref, text_model=ref, pretrained=True, embed_dim=int(cfg["embed_dim"]),
                         head="linear", context_length=context_length,
                         init_logit_scale=min(100.0, max(1.0, math.exp(scale))), label_prior=False)
    model = _assemble(config, clip, source, data_config_of(open_clip.get_model_preprocess_cfg(clip)))
    with torch.no_grad():
        model.logit_scale.fill_(scale)
    return model.eval(), tokenizer
