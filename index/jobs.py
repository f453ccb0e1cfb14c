"""One `tmv index` run as a Python function: a whole index, one shard of it, or, in a process started
by torchrun, this process's shard followed by the merge on rank 0 once every shard is complete.

    from tinymvlm.index.jobs import run_index_job
    run = run_index_job("~/.tmv-index", ["~/Photos"], checkpoint="runs/latest-run")
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from tinymvlm.index.python_api import Index
from tinymvlm.index.shard import Shard, process_group, torchrun_shard
from tinymvlm.index.shard_merge import MergeReport, merge_shards
from tinymvlm.index.store import default_index_dir
from tinymvlm.index.update import IndexReport, Progress

from tinymvlm.errors import TmvError
from tinymvlm.inference.runtime import Runtime


@dataclass
class IndexJob:
    """What a run did: this process's update of its folder (a shard's, under torchrun or --shard)
    and, on the process that merged, the merge."""

    index: Path  # the whole index
    folder: Path  # the folder this process updated: the index's, or its shard's
    shard: Shard | None
    report: IndexReport
    merged: MergeReport | None = None


def run_index_job(index_dir: str | Path | None, paths: Sequence[str | Path] = (), *, checkpoint: str | Path | None = None,
                captions: Sequence[str | Path] = (), caption_column: str | None = None, exclude: Sequence[str] = (),
                index_type: str | None = None, spec_settings: dict | None = None, runtime: Runtime | None = None,
                rebuild: bool = False, wait: bool = False, shard: Shard | None = None, progress: Progress | None = None,
                on_report: Callable[[IndexJob], None] | None = None) -> IndexJob:
    """Bring `index_dir` (None: the default folder) up to date with `paths` and `captions`, or only
    shard `shard` of it. Under torchrun with several processes each process takes shard RANK of
    WORLD_SIZE and rank 0 merges the shards into `index_dir` once all are done. `index_type` and
    `spec_settings` (nlist, nprobe, ... ; None values: not given) override the kept index settings.
    `progress` hears a whole index's run or shard 0's (one bar for a sharded job); `on_report` hears
    this process's report as soon as its folder is done, before waiting for the other processes."""
    out = Path(index_dir).expanduser() if index_dir is not None else default_index_dir()
    under_torchrun = torchrun_shard()
    if shard is not None and under_torchrun is not None:
        raise TmvError("use one of --shard and torchrun at a time")
    shard = shard or under_torchrun
    idx = Index(shard.folder(out) if shard else out, checkpoint=checkpoint, runtime=runtime)
    spec = idx.spec_with(index_type, rebuild, **(spec_settings or {}))
    with process_group() if under_torchrun else contextlib.nullcontext() as barrier:
        with idx:
            report = idx.add(paths, captions=captions, exclude=exclude, caption_column=caption_column, spec=spec,
                             rebuild=rebuild, wait=wait, progress=progress if shard is None or shard.index == 0 else None, shard=shard)
        run = IndexJob(out, idx.folder, shard, report)
        if on_report is not None:
            on_report(run)
        if under_torchrun:
            barrier()  # every rank's shard is complete past this point
            if shard.index == 0:
                run.merged = merge_shards([Shard(i, shard.count).folder(out) for i in range(shard.count)], out, spec,
                                          replace=rebuild, wait=wait)
    return run


def run_merge_job(index_dir: str | Path | None, shard_dirs: Sequence[str | Path] = (), index_type: str | None = None,
                spec_settings: dict | None = None, replace: bool = False, wait: bool = False) -> MergeReport:
    """`tmv index --merge`: combine finished shards (default: every INDEX/shards/I-of-N) into the index;
    the settings given override the shards' own index settings."""
    out = Path(index_dir).expanduser() if index_dir is not None else default_index_dir()
    spec = Index(out).spec_with(index_type, rebuild=True, **(spec_settings or {}))
    return merge_shards(shard_dirs, out, spec, replace=replace, wait=wait)
