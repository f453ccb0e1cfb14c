"""The models this machine can use (`tmv models`): the built-in model, the runs under ./runs ($TMV_RUNS),
the pretrained CLIPs imported into the user cache, and the hub models worth importing.

`RECOMMENDED` is the one place that holds the recommended hub models' published zero-shot figures
and their CPU speed measured on this project's machine (`SPEED_COMMAND` produced the speeds; the
docs page docs/pretrained-clips.md shows the same run in full).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from tinymvlm.errors import TmvError
from tinymvlm.models.builtin import NAME as BUILTIN_NAME
from tinymvlm.models.builtin import builtin_path
from tinymvlm.models.metadata import read_metadata
from tinymvlm.run_folder import BEST, LATEST, latest_run, run_checkpoint, runs_root
from tinymvlm.user_cache import model_cache


@dataclass(frozen=True)
class CpuSpeed:
    """One model's speed in tmv on a CPU, random weights of the real size (speed does not depend on them)."""

    index_fp32: float  # `tmv index` of 2000x1500 JPEGs, images/s, decoding included
    index_bf16: float  # the same in bf16 (what --precision auto picks on a CPU with native bf16)
    cold_query_s: float  # a `tmv search TEXT` as a new process (on the ONNX text encoder where there is one)
    warm_query_ms: float  # a text query to a loaded index (median of 20)
    peak_mib: float  # peak resident memory while indexing (fp32)


@dataclass(frozen=True)
class HubModel:
    """A pretrained CLIP worth importing, with its published Flickr30k zero-shot recall@1 (1k test set)."""

    ref: str  # what --model takes
    name: str
    t2i_r1: float  # text -> image R@1, %
    i2t_r1: float  # image -> text R@1, %
    figures: str  # where the recall figures come from
    speed: CpuSpeed | None = None  # measured here; None: not measured


SPEED_COMMAND = "python benchmarks/bench_clip_cpu.py --n 48 --cold-runs 1 --cold-paths onnx"
SPEED_MACHINE = "2 idle x86 cores with AVX512-BF16 (load average 0.9-1.8)"
BUILTIN_SPEED = CpuSpeed(index_fp32=23.5, index_bf16=31.0, cold_query_s=0.6, warm_query_ms=4.2, peak_mib=1622)

RECOMMENDED = (
    HubModel("hf:openai/clip-vit-base-patch32", "CLIP ViT-B/32 (OpenAI)", 58.8, 78.9, "CLIP paper (Radford et al. 2021)",
             CpuSpeed(index_fp32=13.1, index_bf16=19.4, cold_query_s=1.2, warm_query_ms=12.8, peak_mib=2025)),
    HubModel("hf:google/siglip-base-patch16-224", "SigLIP B/16 224", 74.7, 89.1, "SigLIP paper (Zhai et al. 2023)",
             CpuSpeed(index_fp32=3.4, index_bf16=5.5, cold_query_s=10.3, warm_query_ms=100, peak_mib=2364)),
    HubModel("open_clip:ViT-B-32/openai", "CLIP ViT-B/32 (OpenAI) through open_clip", 58.8, 78.9,
             "CLIP paper (Radford et al. 2021)",
             CpuSpeed(index_fp32=15.2, index_bf16=14.6, cold_query_s=1.9, warm_query_ms=72.9, peak_mib=2249)),
)
PEOPLE = RECOMMENDED[0]  # what the built-in model's notice suggests for folders full of people


@dataclass
class LocalModel:
    """A model on this machine: `ref` is what --model takes to name it."""

    kind: str  # builtin, run, imported
    ref: str
    path: Path | None  # None: the built-in model, not built yet (it is, on first use)
    size_bytes: int = 0
    source: str = ""  # an imported model's reference; a run's checkpoint file name
    default: bool = False  # what a command uses without --model, outside an index
    epoch: int | None = None  # a run's best epoch
    metrics: dict = field(default_factory=dict)  # a run's validation metrics at that epoch

    def to_dict(self) -> dict:
        return {**asdict(self), "path": str(self.path) if self.path else None}


def local_models() -> list[LocalModel]:
    """Every model this machine can use now, the default one marked."""
    runs = run_models()
    return [builtin_model(default=not any(run.default for run in runs)), *runs, *imported_models()]


def builtin_model(default: bool) -> LocalModel:
    path = builtin_path()
    built = path.is_file()
    return LocalModel("builtin", BUILTIN_NAME, path if built else None, path.stat().st_size if built else 0,
                      "packaged towers", default)


def run_models() -> list[LocalModel]:
    """The runs under runs_root() with a checkpoint, each with its best epoch's validation metrics."""
    root = runs_root()
    if not root.is_dir():
        return []
    latest = latest_run()
    models = []
    for run in sorted(p for p in root.iterdir() if (p / BEST).is_file() or (p / LATEST).is_file()):
        path = run_checkpoint(run)
        try:
            info = read_metadata(path).get("info", {})
        except TmvError:
            continue  # a checkpoint that cannot be read is no model to list
        models.append(LocalModel("run", str(run), path, path.stat().st_size, path.name,
                                 latest is not None and run.resolve() == latest.resolve(), info.get("epoch"),
                                 info.get("metrics") or {}))
    return models


def imported_models() -> list[LocalModel]:
    """The pretrained CLIPs imported into the user cache (tinymvlm.models.resolve names them)."""
    models = []
    for path in sorted(model_cache().glob("*.safetensors")):
        if path.name.startswith(BUILTIN_NAME + "-"):
            continue
        try:
            ref = read_metadata(path).get("info", {}).get("imported_from", "")
        except TmvError:
            continue
        if ref:
            models.append(LocalModel("imported", ref, path, path.stat().st_size, ref))
    return models


def label(path: Path) -> str:
    """What a user calls the model in checkpoint `path`: 'builtin', the reference it was imported from, or
    its path (relative to the working folder when inside it)."""
    import os

    from tinymvlm.models.builtin import is_builtin

    if is_builtin(path):
        return BUILTIN_NAME
    if path.parent.resolve() == model_cache().resolve():
        try:
            return read_metadata(path).get("info", {}).get("imported_from") or str(path)
        except TmvError:
            return str(path)
    relative = os.path.relpath(path.resolve())
    return str(path) if relative.startswith("..") else relative
