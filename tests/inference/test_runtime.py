"""The runtime: one set of choices (device, precision, batch size, workers, search threads) resolved
by the same rules in every command."""

from __future__ import annotations

import click
import pytest
import torch
from tinymvlm.cli.main import cli

from tinymvlm.errors import TmvError
from tinymvlm.inference import runtime as runtime_module
from tinymvlm.inference.runtime import Runtime


@pytest.mark.parametrize("kwargs, fragment", [({"precision": "fp16"}, "precision must be auto, fp32 or bf16"),
                                              ({"batch_size": 0}, "--batch-size must be at least 1"),
                                              ({"workers": -1}, "--workers must be 0 or more"),
                                              ({"threads": 0}, "search threads must be at least 1"),
                                              ({"device": "tpu"}, "unknown device 'tpu'")])
def test_bad_settings_are_one_line_errors(kwargs, fragment):
    with pytest.raises(TmvError, match=fragment):
        Runtime(**kwargs).resolve()


def test_auto_resolves_once_to_a_concrete_device_and_precision(monkeypatch):
    monkeypatch.setattr(runtime_module, "cpu_has_native_bf16", lambda: False)
    resolved = Runtime("cpu").resolve()
    assert (resolved.device, resolved.precision) == ("cpu", "fp32")
    assert resolved.resolve() is resolved
    monkeypatch.setattr(runtime_module, "cpu_has_native_bf16", lambda: True)
    assert Runtime("cpu").resolve().precision == "bf16"
    assert Runtime("cpu", "fp32").resolve().precision == "fp32"
    if not torch.cuda.is_available():
        assert Runtime().resolve().device == "cpu"


def test_a_single_query_runs_in_fp32_on_one_search_thread(monkeypatch):
    monkeypatch.setattr(runtime_module, "cpu_has_native_bf16", lambda: True)
    query = Runtime.for_queries("cpu")
    assert (query.resolve().precision, query.threads, query.workers) == ("fp32", 1, 0)
    assert Runtime.for_queries("cpu", "bf16").resolve().precision == "bf16"


def test_auto_workers_share_the_cores_and_skip_a_single_batch(monkeypatch):
    monkeypatch.setattr(runtime_module.os, "cpu_count", lambda: 16)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    auto = Runtime.on("cuda:0", "fp32", batch_size=10)  # worker processes decode for a GPU
    assert auto.decode_threads(11) == 0
    assert auto.loader_workers(10) == 0  # one batch
    assert auto.loader_workers(11) == 8  # at most 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert auto.loader_workers(11) == 4  # 16 cores among 4 processes
    assert Runtime(workers=3).loader_workers(1) == 3


def test_on_a_cpu_auto_decodes_in_threads_then_the_model_runs_on_all_the_cores(monkeypatch):
    monkeypatch.setattr(runtime_module.os, "cpu_count", lambda: 6)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    cpu = Runtime("cpu", batch_size=10)
    assert (cpu.decode_threads(11), cpu.loader_workers(11)) == (6, 0)
    assert (cpu.decode_threads(10), cpu.loader_workers(10)) == (0, 0)  # one batch: this thread decodes it
    assert (Runtime("cpu", workers=2).decode_threads(11), Runtime("cpu", workers=2).loader_workers(11)) == (0, 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert cpu.decode_threads(11) == 3  # 6 cores between 2 processes
    before = torch.get_num_threads()
    with cpu.model_threads():
        assert torch.get_num_threads() == 3
    assert torch.get_num_threads() == before
    with Runtime("cpu", model_threads_cpu=1).model_threads():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_every_command_offers_the_same_device_and_precision_choices():
    for name in ("train", "eval", "index", "search"):
        params = {p.name: p for p in cli.commands[name].params}
        assert params["device"].default == "auto", name
        assert isinstance(params["precision"].type, click.Choice), name
        assert list(params["precision"].type.choices) == list(runtime_module.PRECISIONS), name
        assert params["precision"].default == "auto", name


@pytest.mark.parametrize("flags, native", [("fpu sse avx2 avx512f", False), ("fpu avx512f avx512_bf16", True),
                                           ("fpu amx_tile amx_bf16", True), ("fpu avx512_bf16x", False)])
def test_precision_auto_reads_native_bf16_from_the_cpu_flags(tmp_path, flags, native):
    """`--precision auto` on a CPU: bf16 exactly when /proc/cpuinfo lists avx512_bf16 or amx_bf16."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n\nprocessor\t: 1\n", encoding="ascii")
    assert runtime_module.cpu_has_native_bf16(str(cpuinfo)) is native
    assert runtime_module.cpu_has_native_bf16(str(tmp_path / "absent")) is False  # no /proc: fp32
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:  # this machine, read independently
        flags_here = set(next((line for line in fh if line.startswith("flags")), "").split(":", 1)[-1].split())
    expected = "bf16" if flags_here & {"avx512_bf16", "amx_bf16"} else "fp32"
    assert Runtime("cpu").resolve().precision == expected
