"""How a command runs a model: device, precision, batch size, decoding workers and search threads,
resolved once and with the same rules in every command (train, eval, index, search).

`auto` device is CUDA when present, else the CPU; with several torchrun processes `auto`/`cuda` mean
cuda:LOCAL_RANK. `auto` precision is bf16 where the hardware runs it natively (CUDA with bf16, CPUs
with AVX512-BF16 or AMX; efficientnet_lite0 embeds 1.4x faster in bf16 on such a 2-core machine, see
benchmarks/bench_index.py), else fp32: emulated bf16 is slower than fp32. bf16 embeddings differ from
fp32 ones by about 1e-3 in cosine. A single query is the one exception: `auto` is fp32 there, since a
batch of one gains nothing from bf16 and stays exact. `auto` workers (None) on a GPU are this
machine's cores shared among its torchrun processes, at most 8, and none for a job of one batch
(starting workers costs more than they save). On a CPU, `auto` decodes each batch in threads of this
process on all its cores, then the model runs on all of them (torch threads: `model_threads_cpu`):
worker processes beside the model would preempt its threads mid-layer (see benchmarks/bench_index.py).

On CUDA, JPEG files decode and resize on the GPU (`gpu_decode`): the CPU only reads their bytes.
`device_decode=False`, or TMV_DEVICE_DECODE=0 in the environment, keeps every decode on the CPU.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from tinymvlm.errors import TmvError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "fp32", "bf16")
MAX_WORKERS = 8


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """AVX512-BF16 or AMX: bf16 matrix work runs natively (elsewhere it is emulated and slow)."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(device: torch.device, precision: str) -> str:
    """`auto` is bf16 where the hardware runs it natively (CUDA, recent x86 CPUs), else fp32."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


def autocast(device: str | torch.device, precision: str):
    """bf16 autocast on CPU or CUDA when asked; a no-op context for fp32."""
    if precision == "bf16":
        import torch

        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass(frozen=True)
class Runtime:
    """The run settings of one command. Build it from flags, then `resolve()` it once: the resolved
    copy names a concrete device and precision, and resolving it again changes nothing."""

    device: str = "auto"
    precision: str = "auto"  # auto | fp32 | bf16
    batch_size: int = 64
    workers: int | None = None  # DataLoader processes decoding images; None: auto (module docstring)
    threads: int | None = None  # FAISS (OpenMP) search threads; None: FAISS's default, one per core
    model_threads_cpu: int | None = None  # torch threads of a CPU model; None: this process's cores
    device_decode: bool = field(default_factory=lambda: os.environ.get("TMV_DEVICE_DECODE", "1") != "0")
    resolved: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise TmvError(f"precision must be auto, fp32 or bf16, not '{self.precision}'")
        if self.batch_size < 1:
            raise TmvError(f"--batch-size must be at least 1, not {self.batch_size}")
        if self.workers is not None and self.workers < 0:
            raise TmvError(f"--workers must be 0 or more, not {self.workers}")
        if self.threads is not None and self.threads < 1:
            raise TmvError(f"search threads must be at least 1, not {self.threads}")

    @classmethod
    def for_queries(cls, device: str = "auto", precision: str = "auto") -> "Runtime":
        """One interactive query: one search thread (OpenMP start-up and hand-offs cost more than a
        parallel scan saves on one query, a lot more on a busy machine) and `auto` precision fp32."""
        return cls(device=device, precision="fp32" if precision == "auto" else precision, batch_size=1, workers=0,
                   threads=1)

    @classmethod
    def on(cls, device: torch.device | str, precision: str, **settings) -> "Runtime":
        """A runtime on a device its caller already resolved (training's own, a model's own)."""
        import torch

        device = torch.device(device)
        return cls(device=str(device), precision=resolve_precision(device, precision), resolved=True, **settings)

    def resolve(self) -> "Runtime":
        """This runtime with a concrete device (per torchrun process) and precision."""
        if self.resolved:
            return self
        from tinymvlm.distributed import from_env, resolve_device

        device = resolve_device(self.device, from_env())
        return replace(self, device=str(device), precision=resolve_precision(device, self.precision), resolved=True)

    @property
    def torch_device(self) -> torch.device:
        import torch

        return torch.device(self.resolve().device)

    @property
    def decodes_on_device(self) -> bool:
        """JPEGs decode on the accelerator (module docstring)."""
        return self.device_decode and self.torch_device.type == "cuda"

    def autocast(self):
        resolved = self.resolve()
        return autocast(resolved.device, resolved.precision)

    def decode_threads(self, items: int) -> int:
        """Threads decoding each batch in this process, between forward passes: a CPU model with auto
        workers, more than one batch. Decoding and the model then take turns on all the cores, each
        using every core, instead of worker processes preempting the model's threads mid-layer. 0:
        DataLoader workers decode (`loader_workers`)."""
        if self.workers is not None or items <= self.batch_size or self.torch_device.type != "cpu":
            return 0
        return self.cpu_cores()

    def loader_workers(self, items: int) -> int:
        """Decoding processes for a job of `items` images (the `auto` rule in the module docstring)."""
        if self.workers is not None:
            return self.workers
        if items <= self.batch_size or self.decode_threads(items):
            return 0
        return max(1, min(MAX_WORKERS, self.cpu_cores()))

    def cpu_cores(self) -> int:
        """This process's share of the machine's cores (torchrun's processes split them)."""
        try:
            local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE") or 1))
        except ValueError as exc:
            raise TmvError(f"LOCAL_WORLD_SIZE from the launcher is not a whole number: {exc}") from exc
        return max(1, (os.cpu_count() or 1) // local)

    @contextlib.contextmanager
    def model_threads(self):
        """torch's intra-op threads while a CPU model embeds: `model_threads_cpu`, by default this
        process's share of the cores; the caller's setting is restored after."""
        import torch

        if self.torch_device.type != "cpu":
            yield
            return
        before = torch.get_num_threads()
        torch.set_num_threads(self.model_threads_cpu or self.cpu_cores())
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def apply_threads(self) -> None:
        """Set FAISS's search threads, when this runtime names a number (process-wide, as OpenMP is)."""
        if self.threads is not None:
            import faiss

            faiss.omp_set_num_threads(self.threads)

    def to_dict(self) -> dict:
        """The resolved settings, as an evaluation record states them."""
        resolved = self.resolve()
        return {"device": resolved.device, "precision": resolved.precision, "batch_size": resolved.batch_size}
