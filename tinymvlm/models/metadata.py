"""A checkpoint's metadata (checkpoint.py writes it), read without torch: a text search on the ONNX
text encoder (text_onnx.py) needs the model's identity and tokenizer, not its weights or torch."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open

from tinymvlm.errors import TmvError

FORMAT = "tinymvlm-checkpoint/1"
JSON_FIELDS = ("model_config", "text_config", "data_config", "tokenizer", "tokenizer_binary", "source", "info",
               "trainer_state")


def read_metadata(path: str | Path) -> dict:
    """The checkpoint's metadata with JSON fields decoded; a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise TmvError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="numpy") as fh:
            raw = fh.metadata() or {}
    except Exception as exc:
        raise TmvError(f"{path} is not a tinymvlm checkpoint (not a safetensors file); train one with 'tmv train'") from exc
    if raw.get("format") != FORMAT:
        raise TmvError(f"{path} is a safetensors file but not a tinymvlm checkpoint (format {raw.get('format')!r})")
    meta = dict(raw)
    for key in JSON_FIELDS:
        if key in meta:
            meta[key] = json.loads(meta[key])
    return meta
