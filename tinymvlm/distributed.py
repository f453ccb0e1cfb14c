"""Multi-process training on PyTorch's own engine: torchrun sets RANK/WORLD_SIZE/LOCAL_RANK, we join
its process group (NCCL on GPUs, gloo on CPUs) and offer the few collectives training needs.

Outside torchrun (no WORLD_SIZE, or 1) everything here is a no-op for a single process, so the
same training code runs either way.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterator

import torch
import torch.distributed as dist

from tinymvlm.errors import TmvError

# Rank 0 validates and writes checkpoints while the others wait at a barrier: allow for a long one.
TIMEOUT = timedelta(minutes=60)


@dataclass(frozen=True)
class Dist:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    try:
        return default if value is None else int(value)
    except ValueError as exc:
        raise TmvError(f"environment variable {name}={value!r} is not a whole number") from exc


def from_env() -> Dist:
    """What torchrun told this process (a single process when not launched by it)."""
    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
    return Dist(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))


def is_main_process() -> bool:
    """True on rank 0 (and in a single process): the one process that writes and prints."""
    return from_env().is_main


def resolve_device(name: str, info: Dist = Dist()) -> torch.device:
    """auto, cpu, cuda[:N]; with several processes `auto`/`cuda` mean cuda:LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise TmvError(f"unknown device '{name}'; use auto, cpu or cuda[:N]") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TmvError(f"device '{name}' asked for, but no CUDA GPU is available; use --device cpu")
    if device.type == "cuda" and info.world_size > 1:
        if device.index is not None:
            raise TmvError(f"with several processes each uses cuda:LOCAL_RANK; use --device cuda or auto, not '{name}'")
        if info.local_rank >= torch.cuda.device_count():
            raise TmvError(f"local rank {info.local_rank} has no GPU: this node has {torch.cuda.device_count()}; "
                           "lower --nproc_per_node")
        device = torch.device("cuda", info.local_rank)
    return device


@contextlib.contextmanager
def session(device_name: str) -> Iterator[tuple[Dist, torch.device]]:
    """Join torchrun's process group for the duration (unless the caller already did), on this
    process's device; leave it again on exit."""
    info = from_env()
    device = resolve_device(device_name, info)
    created = False
    if info.world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT,
                                device_id=device if device.type == "cuda" else None)
        created = True
    try:
        yield info, device
    finally:
        if created:
            dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if active():
        dist.barrier()


def mean(value: float, device: torch.device) -> float:
    """The average of a number over all processes (e.g. each rank's share of the loss)."""
    if not active():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / dist.get_world_size()


def broadcast_text(text: str, device: torch.device) -> str:
    """Rank 0's string on every rank (as bytes in tensors: nothing is pickled)."""
    if not active():
        return text
    data = torch.tensor(list(text.encode()), dtype=torch.uint8, device=device)
    size = torch.tensor([len(data)], dtype=torch.long, device=device)
    dist.broadcast(size, 0)
    if dist.get_rank() != 0:
        data = torch.empty(int(size.item()), dtype=torch.uint8, device=device)
    dist.broadcast(data, 0)
    return bytes(data.cpu().tolist()).decode()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient for this rank's rows (open_clip's
    gather-with-grad): each rank's loss may use other ranks' features, and those gradients must
    reach the rank that computed the features."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.rows = dist.get_rank(), tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Rows of every rank, in rank order, differentiable. Every rank must pass the same shape."""
    return _GatherWithGrad.apply(tensor) if active() else tensor


LAUNCHED = "TMV_LAUNCHED"  # set for the processes `launch` starts: they leave error reports to it


def record_failure(message: str) -> bool:
    """In a process started by `launch`: hand this process's one-line error to the launcher (which
    reports the first real failure of all its processes) instead of printing it. False elsewhere:
    the caller prints it itself."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not os.environ.get(LAUNCHED) or not path:
        return False
    import json
    import time

    from tinymvlm.atomic import write_text

    # Atomic: the launcher may stop this process mid-write, and reading half a file fails its report.
    write_text(path, json.dumps({"message": message, "timestamp": int(time.time()), "tmv_time_ns": time.time_ns()}))
    return True


@dataclass(frozen=True)
class Failure:
    """How one launched process ended badly: exit status (negative: killed by that signal), and the
    one-line error it recorded (`record_failure`), with when."""

    rank: int
    exitcode: int
    message: str | None = None
    time_ns: int | None = None


def first_failure(failures: list[Failure]) -> Failure | None:
    """The failure that caused the others. When a process fails, the launcher stops the rest with
    SIGTERM, so a stopped process is never the cause while another failed, unless it had recorded
    its own error before it was stopped (on its way out); among the rest, the first error recorded,
    then the lowest rank."""
    if not failures:
        return None
    real = [f for f in failures if f.message is not None or f.exitcode != -signal.SIGTERM] or failures
    return min(real, key=lambda f: (f.time_ns is None, f.time_ns or 0, f.rank))


def launch(nproc: int, args: list[str], log_dir: str, what: str, verbose: bool = False) -> None:
    """Run `python -u ARGS` in `nproc` processes on this machine through torchrun's own machinery
    (as `torchrun --standalone --nproc_per_node N -m ...`); each gets OMP_NUM_THREADS cores / N
    unless set. If any fails, raises one TmvError for the first real failure: its own one-line
    error, or which `what` process failed with which status."""
    import logging
    import sys
    import uuid

    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nproc < 1:
        raise TmvError(f"--nproc must be 1 or more, not {nproc}")
    if "WORLD_SIZE" in os.environ:
        raise TmvError("--nproc starts its own processes; under torchrun leave it out")
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                          logs_specs=DefaultLogsSpecs(log_dir=log_dir))
    elastic_log = logging.getLogger("torch.distributed.elastic")
    level = elastic_log.level
    if not verbose:  # the launcher's own lines (e.g. that it stops the other processes); ours follow
        elastic_log.setLevel(logging.CRITICAL)
    env = {LAUNCHED: "1"}
    if "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    os.environ.update(env)
    try:
        elastic_launch(config, sys.executable)("-u", *args)
        return
    except ChildFailedError as exc:
        failures = [Failure(rank, f.exitcode, f.message if f.error_file_data.get("tmv_time_ns") else None,
                            f.error_file_data.get("tmv_time_ns")) for rank, f in exc.failures.items()]
    finally:
        for name in env:
            del os.environ[name]
        elastic_log.setLevel(level)
    first = first_failure(failures)
    if first.message:
        raise TmvError(first.message)
    raise TmvError(f"{what} process {first.rank} of {nproc} failed with exit status {first.exitcode}; see its output above")
