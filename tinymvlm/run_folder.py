"""A training run's folder: what it holds and how a run is found again. Training writes it; the
resolution of a `--model` name reads it (a run folder means its best checkpoint).

    RUN/config.yaml               the run's options, flat (the keys of `tmv train --config`)
    RUN/metrics.jsonl             one JSON line per optimiser step and per epoch
    RUN/epoch_NNN.safetensors     weights every `save_every` epochs
    RUN/best.safetensors          the best epoch's weights
    RUN/latest.safetensors        weights plus trainer state: what a resume reads
    RUN/curves.png                training loss and validation recall, redrawn after every epoch
    RUN/.*.tmp                    a checkpoint write cut short by a kill (removed when the run restarts)

Runs live under ./runs ($TMV_RUNS) unless given a folder. The run's options (config.yaml) are read and
written by `tinymvlm.training.run_config`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tinymvlm.atomic import write_text
from tinymvlm.errors import TmvError

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
BEST = "best.safetensors"
LATEST = "latest.safetensors"
CURVES = "curves.png"


def epoch_checkpoint(run_dir: Path, epoch: int) -> Path:
    return run_dir / f"epoch_{epoch:03d}.safetensors"


def runs_root() -> Path:
    return Path(os.environ.get("TMV_RUNS", "runs"))


def new_run_dir(out_dir: str | None) -> Path:
    """`out_dir`, else a fresh runs/<date-time>."""
    return Path(out_dir) if out_dir else runs_root() / time.strftime("%Y%m%d-%H%M%S")


def latest_run() -> Path | None:
    """The most recently trained run under runs_root(): the one whose latest checkpoint is newest."""
    root = runs_root()
    runs = sorted((p for p in root.glob("*/" + LATEST)), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    return runs[-1].parent if runs else None


def run_checkpoint(run_dir: Path) -> Path:
    """The checkpoint a run folder stands for: its best, else its latest."""
    for name in (BEST, LATEST):
        if (run_dir / name).is_file():
            return run_dir / name
    raise TmvError(f"run folder {run_dir} holds no {BEST} or {LATEST}")


def curves_of(checkpoint: str | Path | None) -> Path | None:
    """The training curves of the run a checkpoint belongs to, if it is a run's and they were drawn."""
    if checkpoint is None:
        return None
    path = Path(checkpoint)
    curves = (path if path.is_dir() else path.parent) / CURVES
    return curves if curves.is_file() and (curves.parent / METRICS).is_file() else None


def clear_stale(run_dir: Path) -> None:
    """Remove checkpoint writes cut short by a kill."""
    for stale in run_dir.glob(".*.tmp"):
        stale.unlink(missing_ok=True)


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
