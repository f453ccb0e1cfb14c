"""A model's text query path exported to ONNX and run by onnxruntime, so that a text search imports
neither torch nor transformers: on a busy 2-core machine `import torch` alone took 6.4 s wall and
3.0 s of CPU, a whole cold `tmv search` on this path 2.1 s and 0.9 s (benchmarks/bench_cli_startup.py).

One file per model, named by the weights' fingerprint, in the user cache (platformdirs: on Linux
$XDG_CACHE_HOME/tinymvlm/text-encoders, else ~/.cache/...): outside the index, so a read-only index
uses it too and every index of one model shares it. `export` writes it (atomically) whenever a command
already has the model loaded in torch: `tmv index`, or a text search that found no file. It wraps the
model's own `encode_text(ids, mask)`, so any model the project loads is exported the same way, and it
writes the file only after checking, on probe texts, that the `tokenizers` tokenisation gives the same
ids as the Hugging Face tokenizer and the ONNX model the same embeddings as torch (within TOLERANCE).
A model that fails a check is recorded as unsupported and keeps the torch path. `TextEncoder.open`
answers None for a missing, foreign or unreadable file, and the caller uses torch: never a wrong encoder.
Needs the `fast` extra (onnxruntime to search, onnx to export); without it every query uses torch.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from tinymvlm.atomic import atomic_path, write_text
from tinymvlm.errors import first_line
from tinymvlm.user_cache import user_cache

log = logging.getLogger(__name__)

FORMAT = "tinymvlm-text-onnx/1"
TOLERANCE = 1e-4  # largest difference from torch's embedding, per coordinate, that an export may show
PROBES = ("a photo of a cat", "UPPER case, punctuation?! and 10:30", "Ünïcödé café 東京 🐧", "x",
          " ".join(["a very long caption about a dog running on the beach"] * 40))


def cache_dir() -> Path:
    return user_cache("text-encoders")


def encoder_path(fingerprint: str) -> Path:
    return cache_dir() / f"{fingerprint}.onnx"


def _unsupported_path(fingerprint: str) -> Path:
    return cache_dir() / f"{fingerprint}.unsupported"


def _is_file(path: Path) -> bool:
    """Whether `path` is a file; False too when the cache cannot be looked into (another user's)."""
    try:
        return path.is_file()
    except OSError:
        return False


def encoder_exists(fingerprint: str) -> bool:
    return _is_file(encoder_path(fingerprint))


def _fast_tokenizer(meta: dict):
    """The checkpoint's tokenizer.json in the `tokenizers` library, truncating as `tokenize` does."""
    from tokenizers import Tokenizer

    spec = meta.get("tokenizer", {}).get("tokenizer.json")
    if spec is None:
        return None
    tokenizer = Tokenizer.from_str(spec)
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=int(meta["model_config"]["context_length"]))
    return tokenizer


class TextEncoder:
    """Texts -> L2-normalised float32 embeddings with the exported model, one text at a time (a query
    has a few terms; unpadded, each runs exactly as the export was checked)."""

    def __init__(self, session, tokenizer) -> None:
        self.session, self.tokenizer = session, tokenizer
        # A text path that never reads the mask (CLIP's causal tower) is exported without that input.
        self.inputs = {i.name for i in session.get_inputs()}

    @classmethod
    def open(cls, fingerprint: str, meta: dict, threads: int = 1) -> "TextEncoder | None":
        """The encoder of the model with this fingerprint; None (logged) when there is none to trust."""
        path = encoder_path(fingerprint)
        try:
            import onnxruntime as ort
        except ImportError:
            return None
        if not _is_file(path):
            return None
        options = ort.SessionOptions()
        # One thread: a query is tiny (MiniLM-L6, busy 2 cores: 11 ms p50 on one thread, 18-24 ms on two).
        options.intra_op_num_threads = options.inter_op_num_threads = threads
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            found = session.get_modelmeta().custom_metadata_map
            tokenizer = _fast_tokenizer(meta)
        except Exception as exc:  # any unreadable file means: use torch, and export again
            log.warning("ONNX text encoder %s is unreadable (%s); using torch", path, first_line(exc))
            return None
        if found.get("format") != FORMAT or found.get("fingerprint") != fingerprint or tokenizer is None:
            log.warning("ONNX text encoder %s belongs to another model or format; using torch", path)
            return None
        return cls(session, tokenizer)

    def encode(self, texts: list[str]) -> np.ndarray:
        rows = []
        for text in texts:
            ids = np.asarray([self.tokenizer.encode(text).ids], dtype=np.int64)
            feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
            rows.append(self.session.run(None, {k: v for k, v in feed.items() if k in self.inputs})[0][0])
        return np.stack(rows).astype(np.float32)


def needs_export(fingerprint: str) -> bool:
    """No file yet and no earlier verdict that this model cannot be exported."""
    return not encoder_exists(fingerprint) and not _is_file(_unsupported_path(fingerprint))


def export(model, hf_tokenizer, fingerprint: str, meta: dict) -> Path | None:
    """Write the model's ONNX text encoder to the cache; None (logged) when it cannot be written or
    does not match torch. The model stays as it was (a copy is exported when it is not on the CPU)."""
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
        import onnxruntime  # noqa: F401
    except ImportError:
        log.info("onnx/onnxruntime not installed (the 'fast' extra): text searches use torch")
        return None
    path = encoder_path(fingerprint)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            problem = _export_checked(model, hf_tokenizer, fingerprint, meta, tmp)
            if problem is not None:
                raise _Unsupported(problem)
    except _Unsupported as exc:
        log.warning("text searches with model %s use torch: %s", fingerprint, exc)
        try:
            write_text(_unsupported_path(fingerprint), f"{exc}\n")
        except OSError:
            pass
        return None
    except OSError as exc:  # an unwritable or full cache: try again next time
        log.info("cannot write the ONNX text encoder to %s (%s); text searches use torch", path.parent, first_line(exc))
        return None
    log.info("wrote the ONNX text encoder %s: text searches skip torch", path)
    return path


class _Unsupported(Exception):
    pass


def _export_checked(model, hf_tokenizer, fingerprint: str, meta: dict, target: Path) -> str | None:
    """Export into `target` and check it; the reason it is unfit, or None."""
    import copy

    import onnx
    import torch

    from tinymvlm.models.tokenizer import tokenize

    context_length = int(meta["model_config"]["context_length"])
    fast = _fast_tokenizer(meta)
    if fast is None:
        return "the checkpoint's tokenizer has no tokenizer.json"
    for text in PROBES:
        expected = tokenize(hf_tokenizer, [text], context_length)["input_ids"][0].tolist()
        if fast.encode(text).ids != expected:
            return f"the tokenizers library tokenises {text[:30]!r} differently from the model's tokenizer"
    if next(model.parameters()).device.type != "cpu":
        model = copy.deepcopy(model).to("cpu")

    class TextPath(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.model.encode_text(input_ids, attention_mask)

    # Traced on a padded batch, so no branch that skips the mask of an all-ones batch is baked in.
    sample = tokenize(hf_tokenizer, ["a photo of a cat on a mat", "a dog"], context_length)
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(TextPath().eval(), (sample["input_ids"], sample["attention_mask"]), str(target),
                              input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                              dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                                            "attention_mask": {0: "batch", 1: "tokens"}, "embedding": {0: "batch"}},
                              opset_version=17, dynamo=False)
        proto = onnx.load(str(target))
        for key, value in (("format", FORMAT), ("fingerprint", fingerprint)):
            proto.metadata_props.add(key=key, value=value)
        onnx.save(proto, str(target))
    except OSError:
        raise
    except Exception as exc:  # whatever the exporter cannot trace or save: this model keeps torch
        return f"the ONNX export failed: {first_line(exc)}"
    try:
        return _mismatch(model, hf_tokenizer, context_length, target, meta, fingerprint)
    except Exception as exc:  # an export onnxruntime cannot run: this model keeps torch
        return f"the ONNX export does not run: {first_line(exc)}"


def _mismatch(model, hf_tokenizer, context_length: int, target: Path, meta: dict, fingerprint: str) -> str | None:
    import onnxruntime as ort
    import torch

    from tinymvlm.models.tokenizer import tokenize

    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    encoder = TextEncoder(session, _fast_tokenizer(meta))
    got = encoder.encode(list(PROBES))
    with torch.inference_mode():
        batch = tokenize(hf_tokenizer, list(PROBES), context_length)
        expected = model.encode_text(batch["input_ids"], batch["attention_mask"]).float().numpy()
    worst = float(np.abs(got - expected).max())
    if not np.isfinite(worst) or worst > TOLERANCE:
        return f"the ONNX export differs from torch by {worst:.2g} (more than {TOLERANCE:g})"
    return None

