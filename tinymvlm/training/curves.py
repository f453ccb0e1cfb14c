"""A run's training curves as a picture: the loss of every optimiser step and the validation recall of
every epoch (of the WiSE-FT mix the run validates, when it mixes), read from RUN/metrics.jsonl alone, so how a run went is seen at a glance instead of read from
columns of numbers. Drawn on matplotlib's Agg canvas (no display, no global pyplot state), written
atomically as PNG or SVG."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tinymvlm import run_folder
from tinymvlm.atomic import write_figure
from tinymvlm.errors import TmvError

DIRECTIONS = (("t2i", "text → image"), ("i2t", "image → text"))
KS = (1, 5, 10)
K_COLOURS = {1: "#1f77b4", 5: "#ff7f0e", 10: "#2ca02c"}


@dataclass
class Curves:
    """What metrics.jsonl says about a run: step losses and each epoch's record."""

    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    epochs: list[dict] = field(default_factory=list)

    def validated(self) -> list[dict]:
        return [e for e in self.epochs if e.get("val")]

    def best_epoch(self) -> dict | None:
        """The epoch `best.safetensors` holds: the first with the highest `selection_score`."""
        scored = self.validated()
        return max(scored, key=lambda e: (selection_score(e["val"]), -e["epoch"])) if scored else None


def selection_score(metrics: dict[str, float]) -> float:
    """What the trainer's `best` maximises: the mean of R@1, R@5 and R@10 over both directions."""
    keys = [f"{d}_R@{k}" for d, _ in DIRECTIONS for k in KS]
    return sum(metrics[k] for k in keys) / len(keys)


def read_curves(metrics: Path) -> Curves:
    """Parse metrics.jsonl; a line that is not JSON names the file and line."""
    if not metrics.is_file():
        raise TmvError(f"{metrics} does not exist: give a run folder that 'tmv train' wrote")
    curves = Curves()
    for number, line in enumerate(metrics.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise TmvError(f"{metrics}, line {number}: not a JSON record; the file is damaged") from None
        if record.get("type") == "step":
            curves.steps.append(int(record["step"]))
            curves.losses.append(float(record["loss"]))
        elif record.get("type") == "epoch":
            curves.epochs.append(record)
    if not curves.steps and not curves.epochs:
        raise TmvError(f"{metrics} holds no training steps yet")
    return curves


def metrics_path(run: str | Path) -> Path:
    """RUN as given: a run folder, its metrics.jsonl, or one of its checkpoints."""
    path = Path(run)
    if path.is_dir():
        return path / run_folder.METRICS
    if path.name == run_folder.METRICS:
        return path
    if path.suffix == ".safetensors":
        return path.parent / run_folder.METRICS
    raise TmvError(f"{run} is not a run folder: give the folder 'tmv train' wrote (it holds {run_folder.METRICS})")


def _smoothed(values: list[float], window: int) -> list[float]:
    """Running mean over the last `window` values: the trend through the step-to-step noise."""
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def _draw_loss(ax, curves: Curves) -> None:
    ax.plot(curves.steps, curves.losses, color="#9ecae1", linewidth=0.8, label="loss per step")
    window = max(1, len(curves.steps) // 25)
    if window > 1:
        ax.plot(curves.steps, _smoothed(curves.losses, window), color="#08519c", linewidth=1.8,
                label=f"running mean of {window} steps")
    for epoch in curves.epochs:
        ax.axvline(epoch["step"], color="#dddddd", linewidth=0.8, zorder=0)
    ax.set_xlabel("optimiser step (grey lines: epoch ends)")
    ax.set_ylabel("contrastive loss")
    ax.set_title("training loss")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)


def _draw_recall(ax, curves: Curves, alpha: float | None) -> None:
    scored = curves.validated()
    epochs = [e["epoch"] for e in scored]
    for prefix, label in DIRECTIONS:
        for k in KS:
            values = [e["val"].get(f"{prefix}_R@{k}") for e in scored]
            ax.plot(epochs, values, marker="o" if prefix == "t2i" else "s", markersize=4, color=K_COLOURS[k],
                    linestyle="-" if prefix == "t2i" else "--", label=f"{label} R@{k}")
    best = curves.best_epoch()
    ax.axvline(best["epoch"], color="#d62728", linewidth=1.2, linestyle=":")
    last = best["epoch"] == epochs[-1]  # the label goes left of the line, inside the axes
    ax.annotate(f"best: epoch {best['epoch']}", xy=(best["epoch"], 1), xycoords=("data", "axes fraction"),
                xytext=(-4 if last else 4, -12), textcoords="offset points", color="#d62728", fontsize=8,
                ha="right" if last else "left")
    ax.margins(x=0.05)
    ax.set_xlabel("epoch")
    ax.set_ylabel("recall %")
    ax.set_ylim(0, 100)
    ax.set_xticks(epochs if len(epochs) <= 20 else epochs[:: max(1, len(epochs) // 10)])
    mixed = f" of the WiSE-FT mix (alpha {alpha:g})" if alpha is not None and alpha < 1 else ""
    ax.set_title(f"validation recall{mixed}")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=7, ncol=2)


def draw_curves(run: str | Path, out: str | Path | None = None):
    """Draw RUN's curves into `out` (default RUN/curves.png); returns the path written."""
    from matplotlib.figure import Figure

    metrics = metrics_path(run)
    curves = read_curves(metrics)
    run_dir = metrics.parent
    target = Path(out) if out is not None else run_dir / run_folder.CURVES
    scored = curves.validated()
    figure = Figure(figsize=(12 if scored else 7, 4.5), layout="constrained")
    axes = figure.subplots(1, 2 if scored else 1, squeeze=False)[0]
    _draw_loss(axes[0], curves)
    if scored:
        _draw_recall(axes[1], curves, scored[-1].get("val_wise_alpha"))
    last = curves.epochs[-1] if curves.epochs else None
    done = f", {last['epoch']} epoch(s), {last['step']} steps" if last else f", {curves.steps[-1]} steps (first epoch running)"
    figure.suptitle(f"{run_dir.resolve().name}{done}", fontsize=11)
    return write_figure(target, figure)
