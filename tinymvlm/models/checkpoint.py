"""Self-describing checkpoints in safetensors.

One file holds the weights and, in its metadata, everything needed to rebuild the model offline: the
model config, the timm architecture, the text tower's config, the preprocessing config and the
tokenizer's files. `latest` also carries the training state (optimizer tensors, step, RNG) under a
`trainer.` prefix, so resuming needs that one file and nothing is ever unpickled.
"""

from __future__ import annotations

import base64
import hashlib
import json
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tinymvlm.atomic import atomic_path
from tinymvlm.errors import TmvError
from tinymvlm.models.config import ModelConfig
from tinymvlm.models.label_prior import LabelPrior
from tinymvlm.models.metadata import FORMAT, read_metadata
from tinymvlm.models.tinyclip import TinyClip

STATE_PREFIX = "trainer."
PRIOR_KEY = "label_prior.label_text"
PRIOR_CLASSIFIER_KEY = "label_prior.classifier.weight"


def fingerprint(model: TinyClip) -> str:
    """A short hash of the weights: indexes record it and refuse a different model."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _tokenizer_files(tokenizer) -> tuple[dict[str, str], dict[str, str]]:
    """The tokenizer's saved files: text files as they are, binary ones (a SentencePiece model) in base64."""
    text, binary = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        for p in Path(tmp).iterdir():
            if p.is_file():
                try:
                    text[p.name] = p.read_text(encoding="utf-8")
                except UnicodeDecodeError:
                    binary[p.name] = base64.b64encode(p.read_bytes()).decode("ascii")
    return text, binary


def save_checkpoint(path: str | Path, model: TinyClip, tokenizer, info: dict | None = None,
                    trainer_state: tuple[dict[str, torch.Tensor], dict] | None = None) -> str:
    """Write atomically; returns the weights' fingerprint. `info` (epoch, metrics...) goes into the
    metadata; `trainer_state` is (tensors, json-able dict) for resuming."""
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    fp = fingerprint(model)
    text_files, binary_files = _tokenizer_files(tokenizer)
    metadata = {
        "format": FORMAT,
        "fingerprint": fp,
        "model_config": json.dumps(model.config.to_dict()),
        "image_arch": model.image_arch,
        "data_config": json.dumps(model.data_config),
        "tokenizer": json.dumps(text_files),
        "info": json.dumps(info or {}),
    }
    if binary_files:
        metadata["tokenizer_binary"] = json.dumps(binary_files)
    if model.source is not None:  # an imported pretrained CLIP: its towers rebuild from its own config
        metadata["source"] = json.dumps(model.source)
    else:
        text_config = model.text_tower.config.to_diff_dict()
        text_config["model_type"] = model.text_tower.config.model_type
        metadata["text_config"] = json.dumps(text_config)
    if trainer_state is not None:
        state_tensors, state_json = trainer_state
        tensors.update({STATE_PREFIX + k: v.detach().cpu().contiguous() for k, v in state_tensors.items()})
        metadata["trainer_state"] = json.dumps(state_json)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return fp


def load_tokenizer(meta: dict):
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        for name, text in meta["tokenizer"].items():
            (Path(tmp) / Path(name).name).write_text(text, encoding="utf-8")
        for name, data in meta.get("tokenizer_binary", {}).items():
            (Path(tmp) / Path(name).name).write_bytes(base64.b64decode(data))
        return AutoTokenizer.from_pretrained(tmp)


def load_checkpoint(path: str | Path, with_state: bool = False):
    """Rebuild (model, tokenizer, metadata[, trainer tensors]) from one checkpoint file, offline."""
    from tinymvlm.models.pretrained import model_from_source
    from tinymvlm.models.towers import create_timm, text_tower_from_config

    meta = read_metadata(path)
    config = ModelConfig(**{"people": False, **meta["model_config"]})  # checkpoints from before `people` had none
    if "source" in meta:
        model = model_from_source(config, meta["source"], meta["image_arch"], meta["data_config"])
    else:
        image_tower = create_timm(meta["image_arch"], False, config.image_size)
        text_tower = text_tower_from_config(meta["text_config"])
        model = TinyClip(config, image_tower, text_tower, meta["image_arch"], meta["data_config"])
    weights, state = {}, {}
    with safe_open(str(path), framework="pt") as fh:
        if {PRIOR_KEY, PRIOR_CLASSIFIER_KEY} <= set(fh.keys()):
            text, weight = fh.get_slice(PRIOR_KEY).get_shape(), fh.get_slice(PRIOR_CLASSIFIER_KEY).get_shape()
            if len(text) != 2 or len(weight) != 2:
                raise TmvError(f"checkpoint {path} does not match the model it describes: a malformed label prior")
            model.label_prior = LabelPrior.empty(text[0], weight[1], text[1], config.people)
        for key in fh.keys():
            if key.startswith(STATE_PREFIX):
                if with_state:
                    state[key[len(STATE_PREFIX):]] = fh.get_tensor(key)
            else:
                weights[key] = fh.get_tensor(key)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise TmvError(f"checkpoint {path} does not match the model it describes: {str(exc).splitlines()[0]}") from exc
    model.eval()
    tokenizer = load_tokenizer(meta)
    return (model, tokenizer, meta, state) if with_state else (model, tokenizer, meta)
