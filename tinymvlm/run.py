"""A training run's folder, the one place that knows what it holds and how a run is found again.

    RUN/config.yaml               the run's options, flat (the keys of `tmv train --config`)
    RUN/metrics.jsonl             one JSON line per optimiser step and per epoch
    RUN/epoch_NNN.safetensors     weights every `save_every` epochs
    RUN/best.safetensors          the best epoch's weights
    RUN/latest.safetensors        weights plus trainer state: what a resume reads
    RUN/.*.tmp                    a checkpoint write cut short by a kill (removed when the run restarts)

Runs live under ./runs ($TMV_RUNS) unless given a folder. Resuming a run reads its own config.yaml,
so a resumed run trains on the data and with the options it started with.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from .atomic import write_text
from .errors import TmvError
from .options import from_flat, options_of

if TYPE_CHECKING:  # the config module imports torch (through the towers): finding a checkpoint must not
    from .config import TrainConfig

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
BEST = "best.safetensors"
LATEST = "latest.safetensors"


def epoch_checkpoint(run_dir: Path, epoch: int) -> Path:
    return run_dir / f"epoch_{epoch:03d}.safetensors"


def runs_root() -> Path:
    return Path(os.environ.get("TMV_RUNS", "runs"))


def new_run_dir(cfg: TrainConfig) -> Path:
    """`out_dir`, else a fresh runs/<date-time>."""
    return Path(cfg.out_dir) if cfg.out_dir else runs_root() / time.strftime("%Y%m%d-%H%M%S")


def latest_run() -> Path | None:
    """The most recently trained run under runs_root(): the one whose latest checkpoint is newest."""
    root = runs_root()
    runs = sorted((p for p in root.glob("*/" + LATEST)), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    return runs[-1].parent if runs else None


def resolve_checkpoint(path: str | Path | None) -> Path:
    """A checkpoint file as given; a run folder means its best checkpoint; 'builtin' (when no such
    file or folder exists) means the built-in model (see `builtin`); None means the best checkpoint
    of the most recently trained run under ./runs (or $TMV_RUNS), or the built-in model when there
    is none."""
    from . import builtin

    if path is None:
        path = latest_run()
        if path is None:
            return builtin.builtin_checkpoint()
    path = Path(path)
    if str(path) == builtin.NAME and not path.exists():
        return builtin.builtin_checkpoint()
    if path.is_dir():
        for name in (BEST, LATEST):
            if (path / name).is_file():
                return path / name
        raise TmvError(f"run folder {path} holds no {BEST} or {LATEST}")
    if not path.exists():
        raise TmvError(f"checkpoint {path} does not exist")
    return path


# ----------------------------------------------------------------------------------------- options


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
    from .config import TrainConfig

    unknown = sorted(set(flat) - {o.name for o in options_of(TrainConfig)})
    if unknown:
        raise TmvError(f"unknown option(s) in config {path}: {', '.join(unknown)}")
    return flat


def read_config(path: str | Path) -> TrainConfig:
    """A TrainConfig from a YAML file of options (defaults for the options it leaves out)."""
    from .config import TrainConfig

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
    from .config import TrainConfig

    ours, defaults = cfg.to_dict(), TrainConfig().to_dict()
    names = set(given) if given is not None else {k for k, v in ours.items() if v != defaults[k]}
    merged = {**saved.to_dict(), **{k: ours[k] for k in names}, "resume": cfg.resume, "out_dir": str(checkpoint.parent)}
    return from_flat(TrainConfig, merged, f"the options of {checkpoint.parent}")


def validation_pairs(checkpoint: str | Path):
    """The validation set of the run a checkpoint belongs to, split exactly as training split it."""
    from .splits import load_validation

    cfg = run_config(checkpoint)
    if cfg is None:
        raise TmvError(f"{checkpoint} has no {CONFIG} beside it, so its validation data is unknown; pass --data")
    val = load_validation(cfg)
    if val is None:
        raise TmvError(f"the run of {checkpoint} trained without validation data (val_fraction 0); pass --data")
    return val


def clear_stale(run_dir: Path) -> None:
    """Remove checkpoint writes cut short by a kill."""
    for stale in run_dir.glob(".*.tmp"):
        stale.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------- metrics log


class MetricsLog:
    """RUN/metrics.jsonl. Step lines are only flushed (a killed process loses none of them); the
    epoch line is synced to disk, after that epoch's checkpoints, which is where a resume starts."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / METRICS

    def append(self, record: dict, sync: bool = False) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            if sync:
                os.fsync(fh.fileno())

    def truncate(self, last_step: int) -> None:
        """Drop lines past the checkpoint a resumed run restarts from."""
        if not self.path.exists():
            return
        keep = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= last_step]
        write_text(self.path, "".join(line + "\n" for line in keep))

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
