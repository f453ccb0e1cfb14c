"""Recall@k against k for both directions, as a picture (`tmv eval --plot`): how fast each direction
finds its match as more results are read, not only at the three k of the table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tinymvlm.atomic import write_figure
from tinymvlm.evaluation.recall_at_k import retrieval_ranks, summarize

CURVE_MAX_K = 50  # the curve runs to this k (or the largest k asked for, when larger)


@dataclass
class RecallCurve:
    ks: list[int]
    t2i: list[float]  # percent, one per k
    i2t: list[float]
    marked: list[int]  # the k values the table reports


def recall_curve(embedded, marked: Sequence[int], ranks: tuple | None = None) -> RecallCurve:
    """R@k for every k from 1 to max(CURVE_MAX_K, the largest marked k), never past the larger candidate
    set, of an evaluation's embeddings (`RetrievalResult.embedded`); `ranks`, when the evaluation already
    ranked them (`RetrievalResult.ranks`), saves ranking them again."""
    t2i_ranks, i2t_ranks = ranks or retrieval_ranks(embedded.images, embedded.texts, embedded.text_image)
    last = min(max(CURVE_MAX_K, *marked), max(len(embedded.images), len(embedded.texts)))
    ks = list(range(1, last + 1))
    metrics = summarize(t2i_ranks, i2t_ranks, ks)
    return RecallCurve(ks, [metrics[f"t2i_R@{k}"] for k in ks], [metrics[f"i2t_R@{k}"] for k in ks],
                       [k for k in marked if k <= last])


def draw_recall_curve(curve: RecallCurve, out: str | Path, title: str) -> Path:
    """Both directions' recall@k on a log k axis, the table's k values marked with their figures."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, ScalarFormatter

    figure = Figure(figsize=(7, 4.5), layout="constrained")
    ax = figure.subplots()
    lines = ((curve.t2i, curve.i2t, "text → image", "#1f77b4"), (curve.i2t, curve.t2i, "image → text", "#ff7f0e"))
    for values, other, label, colour in lines:
        ax.plot(curve.ks, values, color=colour, linewidth=1.8, label=label)
        for k in curve.marked:  # the higher of the two figures is labelled above its point, the lower below
            above = values[k - 1] > other[k - 1] or (values[k - 1] == other[k - 1] and values is curve.i2t)
            ax.plot([k], [values[k - 1]], "o", color=colour, markersize=5)
            first = k == curve.ks[0]  # at the left edge the label goes right of its point
            ax.annotate(f"{values[k - 1]:.1f}", (k, values[k - 1]), xytext=(4 if first else -4, 6 if above else -13),
                        textcoords="offset points", fontsize=8, color=colour, ha="left" if first else "right")
    ax.set_xscale("log")
    ticks = [k for k in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if k <= curve.ks[-1]]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlim(1, curve.ks[-1])
    ax.set_ylim(0, 100)
    ax.set_xlabel("k (results read)")
    ax.set_ylabel("recall@k %")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3, which="both")
    ax.legend(loc="lower right")
    return write_figure(out, figure)
