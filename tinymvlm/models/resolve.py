"""What `--model` names, resolved to a tmv checkpoint file: the one place that reads model references.

    hf:ORG/NAME              a Hugging Face CLIP or SigLIP model from the hub
    hf:FOLDER, FOLDER        a saved Hugging Face CLIP or SigLIP folder (config.json, model_type clip/siglip)
    open_clip:ARCH/TAG       an open_clip model with a pretrained tag (from the hub)
    open_clip:ARCH/FILE      an open_clip model with a local checkpoint file
    FILE.safetensors         a tmv checkpoint
    RUN                      a run folder: its best checkpoint (else its latest)
    builtin                  the built-in model (see `builtin`), unless a file or folder has that name
    nothing                  the latest run under ./runs ($TMV_RUNS), else the built-in model

`choose_model` says why too (a `ModelChoice`), for the one line a command prints about its model.

A pretrained model is imported once into a self-describing checkpoint under the user cache folder
(`models/`, written atomically), keyed by the reference, and for a local folder or file by the
names, sizes and modification times of its files, so an edited folder is imported again. From
then on it is a checkpoint like any other: indexes record its path and fingerprint, and it loads
offline.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tinymvlm.errors import TmvError
from tinymvlm.models import download
from tinymvlm.run_folder import latest_run, run_checkpoint, runs_root
from tinymvlm.user_cache import model_cache

log = logging.getLogger(__name__)

HF_PREFIX = "hf:"
OPEN_CLIP_PREFIX = "open_clip:"
FORMS = ("hf:ORG/NAME, open_clip:ARCH/TAG or open_clip:ARCH/FILE, a Hugging Face CLIP/SigLIP folder, "
         "a tmv checkpoint or run folder, or builtin")
OFFLINE_CHOICES = ("offline, use --model builtin (the packaged towers), a local Hugging Face CLIP/SigLIP folder, "
                   "open_clip:ARCH/FILE with a local checkpoint file, or a tmv checkpoint")


# Why a model was chosen: the reasons a `ModelChoice` carries.
GIVEN = "--model"
LATEST_RUN = "latest run in {root}"
NO_RUN = "built-in: no run found in {root}"
INDEX_BUILT = "index was built with it"


@dataclass(frozen=True)
class ModelChoice:
    """The checkpoint a command uses, what the user named (None: nothing) and why it is this one."""

    path: Path
    ref: str | None
    reason: str


def choose_model(ref: str | Path | None) -> ModelChoice:
    """The checkpoint that `ref` names (importing a pretrained CLIP the first time it is named), and why."""
    if ref is not None:
        return ModelChoice(_named(str(ref)), str(ref), GIVEN)
    run, root = latest_run(), runs_root()
    shown = str(root) if root.is_absolute() else f"./{root}"
    if run is None:
        return ModelChoice(_builtin(), None, NO_RUN.format(root=shown))
    return ModelChoice(run_checkpoint(run), None, LATEST_RUN.format(root=shown))


def resolve_model(ref: str | Path | None) -> Path:
    """The checkpoint file that `ref` names (see `choose_model`)."""
    return choose_model(ref).path


def _named(ref: str) -> Path:
    if ref == "builtin" and not Path(ref).exists():
        return _builtin()
    if ref.startswith(HF_PREFIX):
        return _hf(ref[len(HF_PREFIX):], ref)
    if ref.startswith(OPEN_CLIP_PREFIX):
        return _open_clip(ref[len(OPEN_CLIP_PREFIX):], ref)
    path = Path(ref).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return _hf(str(path), ref)
        try:
            return run_checkpoint(path)
        except TmvError:
            raise TmvError(f"folder {path} is neither a tmv run folder (best.safetensors) nor a Hugging Face "
                           "CLIP/SigLIP folder (config.json); --model takes " + FORMS) from None
    if path.exists():
        return path
    if path.suffix or len(path.parts) > 1:
        raise TmvError(f"checkpoint {path} does not exist")
    raise TmvError(f"unknown model '{ref}': no such file or folder; --model takes {FORMS}")


def _builtin() -> Path:
    from tinymvlm.models.builtin import builtin_checkpoint

    return builtin_checkpoint()


def _hf(name: str, ref: str) -> Path:
    from tinymvlm.models import hf_clip

    folder = Path(name).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise TmvError(f"{folder} is not a Hugging Face model folder (no config.json); --model takes {FORMS}")
        model_type = _model_type(folder)
        if model_type not in hf_clip.MODEL_TYPES:
            raise TmvError(f"{folder} holds a Hugging Face '{model_type}' model, not CLIP or SigLIP; --model takes {FORMS}")
        return _cached(_local_key("hf", folder), lambda: hf_clip.import_model(str(folder), ref), ref)
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name):
        raise TmvError(f"unknown model '{ref}': neither an existing folder nor a hub name like hf:ORG/NAME")
    return _from_hub(name, ref, lambda folder: hf_clip.import_model(str(folder), ref))


def _open_clip(spec: str, ref: str) -> Path:
    from tinymvlm.models import openclip

    open_clip = openclip.require_open_clip()
    arch, _, rest = spec.partition("/")
    if not arch or not rest:
        raise TmvError(f"'{ref}': give open_clip:ARCH/TAG (a pretrained tag) or open_clip:ARCH/FILE (a checkpoint file)")
    openclip.model_cfg(arch, None)  # an unknown architecture fails here, before anything loads
    file = Path(rest).expanduser()
    if file.is_file():
        return _cached(_local_key("open_clip:" + arch, file), lambda: openclip.import_model(arch, str(file), ref), ref)
    if not open_clip.get_pretrained_cfg(arch, rest):
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
        raise TmvError(f"'{ref}': {rest} is neither a file nor a pretrained tag of {arch} (its tags: {tags})")
    hf_hub = open_clip.get_pretrained_cfg(arch, rest).get("hf_hub")
    if not hf_hub:  # a tag with a plain URL: open_clip downloads it
        return _cached(_ref_key(ref), lambda: openclip.import_model(arch, rest, ref, tag=rest), ref, needs_hub=True)
    repo_id, filename = os.path.split(hf_hub)  # "ORG/NAME/" or "ORG/NAME/FILE", as open_clip splits it
    names = openclip.weight_files(filename)

    def weights(files: list[download.RemoteFile]) -> list[download.RemoteFile]:
        by_name = {f.path: f for f in files}
        return [by_name[n] for n in names if n in by_name][:1]

    def load(folder: Path):
        file = next(folder / n for n in names if (folder / n).is_file())
        return openclip.import_model(arch, str(file), ref, tag=rest)

    return _from_hub(repo_id, ref, load, weights)


def _from_hub(repo_id: str, ref: str, load: Callable, files: Callable | None = None) -> Path:
    """The imported checkpoint of a hub model: its files fetched (download.py), imported by `load(folder)`,
    then removed."""
    return _cached(_ref_key(ref), lambda: load(download.fetch(repo_id, ref, files or download.wanted)), ref,
                   needs_hub=True, after=lambda: download.discard(repo_id))


def _model_type(folder: Path) -> str | None:
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError) as exc:
        raise TmvError(f"{folder}/config.json cannot be read as JSON: {exc}") from exc


def _ref_key(ref: str) -> str:
    return hashlib.sha256(ref.encode()).hexdigest()[:16]


def _local_key(kind: str, path: Path) -> str:
    """A folder's or file's identity: its absolute path and every file's name, size and mtime."""
    path = path.resolve()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    stats = [(str(p.relative_to(path)) if path.is_dir() else p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return hashlib.sha256(json.dumps([kind, str(path), stats]).encode()).hexdigest()[:16]


def _cached(key: str, load: Callable, ref: str, needs_hub: bool = False, after: Callable | None = None) -> Path:
    """The imported checkpoint for `key`, importing (and caching) it with `load` the first time; then
    `after` (what the import needed and no longer does goes)."""
    from tinymvlm import hub
    from tinymvlm.models.checkpoint import save_checkpoint

    slug = re.sub(r"[^\w.-]+", "_", ref.split(":", 1)[-1].strip("/"))[-60:]
    path = model_cache() / f"{slug}-{key}.safetensors"
    if path.is_file():
        return path
    if needs_hub and not hub.reachable():
        raise TmvError(f"model '{ref}' must be downloaded from the Hugging Face hub, which cannot be reached; {OFFLINE_CHOICES}")
    log.warning("importing %s once into %s", ref, path)
    model, tokenizer = load()
    save_checkpoint(path, model, tokenizer, {"imported_from": ref})
    if after is not None:
        after()
    return path
