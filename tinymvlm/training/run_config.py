"""A run's options on disk: config.yaml read and written, `--config` files, and what a resumed run
trains with (its own config.yaml, overridden by the options given again)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable

from tinymvlm.atomic import write_text
from tinymvlm.errors import TmvError
from tinymvlm.options import from_flat, options_of
from tinymvlm.run_folder import CONFIG, LATEST
from tinymvlm.training.config import TrainConfig


def read_options(path: str | Path) -> dict[str, Any]:
    """The options of a YAML file (a run's config.yaml or a `--config` file) as a flat mapping of
    option names, each checked to be a known option. A `model:` section (how config.yaml was
    written before options were flat) is read as its keys."""
    import yaml

    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise TmvError(f"cannot read config {path}: {str(exc).splitlines()[0]}") from exc
    if isinstance(loaded, dict) and isinstance(loaded.get("model"), str):  # `model: REF`, as `--model REF` says it
        loaded = {**{k: v for k, v in loaded.items() if k != "model"}, "base_model": loaded["model"]}
    if not isinstance(loaded, dict) or not isinstance(loaded.get("model") or {}, dict):
        raise TmvError(f"config {path} must be a mapping of option names to values")
    flat = {str(k).replace("-", "_"): v for k, v in loaded.items() if k != "model"}
    flat.update({str(k).replace("-", "_"): v for k, v in (loaded.get("model") or {}).items()})
    unknown = sorted(set(flat) - {o.name for o in options_of(TrainConfig)})
    if unknown:
        raise TmvError(f"unknown option(s) in config {path}: {', '.join(unknown)}")
    return flat


def read_config(path: str | Path) -> TrainConfig:
    """A TrainConfig from a YAML file of options (defaults for the options it leaves out)."""
    return from_flat(TrainConfig, read_options(path), f"config {path}")


def write_config(run_dir: Path, cfg: TrainConfig) -> None:
    """config.yaml: the run's resolved options (without `resume`, which is how this start began,
    not what the run is)."""
    import yaml

    write_text(run_dir / CONFIG, yaml.safe_dump(dataclasses.replace(cfg, resume=None).to_dict(), sort_keys=False))


def run_config(checkpoint: str | Path) -> TrainConfig | None:
    """The config of the run a checkpoint belongs to (its folder's config.yaml), if it has one."""
    path = Path(checkpoint).parent / CONFIG
    return read_config(path) if path.is_file() else None


# ------------------------------------------------------------------------------------------ resume


def resume_checkpoint(cfg: TrainConfig) -> Path:
    """The latest.safetensors that `cfg.resume` names: 'latest' of `out_dir`, or a file."""
    if cfg.resume == "latest" and not cfg.out_dir:
        raise TmvError("--resume latest needs --out-dir RUN_FOLDER (or give the path of a latest.safetensors)")
    path = Path(cfg.out_dir) / LATEST if cfg.resume == "latest" else Path(cfg.resume)
    if not path.is_file():
        raise TmvError(f"cannot resume: {path} does not exist (a run writes {LATEST} after its first epoch)")
    return path


def resumed_config(cfg: TrainConfig, given: Iterable[str] | None = None) -> TrainConfig:
    """What a resumed run trains with: its own config.yaml, overridden by the options of `cfg`
    named in `given` (by default those that differ from the defaults, e.g. a larger `epochs`).
    A config without `resume` is returned as it is."""
    if not cfg.resume:
        return cfg
    checkpoint = resume_checkpoint(cfg)
    saved = run_config(checkpoint)
    if saved is None:  # a checkpoint outside a run folder: continue with the options given
        return dataclasses.replace(cfg, out_dir=cfg.out_dir or str(checkpoint.parent))
    ours, defaults = cfg.to_dict(), TrainConfig().to_dict()
    names = set(given) if given is not None else {k for k, v in ours.items() if v != defaults[k]}
    merged = {**saved.to_dict(), **{k: ours[k] for k in names}, "resume": cfg.resume, "out_dir": str(checkpoint.parent)}
    return from_flat(TrainConfig, merged, f"the options of {checkpoint.parent}")


def validation_pairs(checkpoint: str | Path):
    """The validation set of the run a checkpoint belongs to, split exactly as training split it."""
    from tinymvlm.training.splits import load_validation

    cfg = run_config(checkpoint)
    if cfg is None:
        raise TmvError(f"{checkpoint} has no {CONFIG} beside it, so its validation data is unknown; pass --data")
    val = load_validation(cfg)
    if val is None:
        raise TmvError(f"the run of {checkpoint} trained without validation data (val_fraction 0); pass --data")
    return val
