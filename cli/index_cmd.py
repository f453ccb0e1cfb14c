"""`tmv index`: embed image folders and caption files into an incremental FAISS index."""

from __future__ import annotations

import click
from tinymvlm.cli.console import err, friendly_errors, model_option, note_model, progress, quiet_option, setup_logging


class RichProgress:
    """Draws scanning and embedding progress (count, images/s, ETA) on stderr."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                 TimeRemainingColumn(), transient=False)
        self.task = None
        self.what = "images"
        self._start = 0.0

    def scanned(self, n_files: int) -> None:
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task("scanning", total=None, rate="")
        if n_files % 200 == 0:
            self.progress.update(self.task, completed=n_files, rate="files")

    def planned(self, plan) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=plan.scanned, total=plan.scanned, rate="files")

    def embedding(self, total: int, what: str) -> None:
        import time

        if self.task is None:
            self.progress.start()
        else:
            self.progress.remove_task(self.task)
        self.what, self._start = what, time.perf_counter()
        self.task = self.progress.add_task(f"embedding {what}", total=total, rate="")

    def advanced(self, done: int, failed: int) -> None:
        import time

        elapsed = time.perf_counter() - self._start
        rate = f"{done / elapsed:.1f} {self.what}/s" if elapsed > 0 else ""
        if failed:
            rate += f"  [yellow]{failed} skipped[/]"
        self.progress.update(self.task, completed=done, rate=rate)

    def finished_embedding(self) -> None:
        pass

    def close(self) -> None:
        if self.task is not None:  # stopping a bar never drawn would print an empty line
            self.progress.stop()


def print_report(report, folder, verbose: bool, prefix: str = "") -> None:
    from rich.markup import escape

    from tinymvlm.image_files import file_kind, printable

    parts = [f"{report.scanned} image files", f"{report.unchanged} unchanged", f"{report.embedded} embedded"]
    for name in ("added", "updated", "moved", "copied", "touched", "removed"):
        if getattr(report, name):
            parts.append(f"{getattr(report, name)} {name}")
    if report.scanned or report.embedded:
        err.print(prefix + "images: " + ", ".join(parts) + (f" ({report.images_per_s:.1f} images/s)" if report.embedded else ""))
    if report.described:
        err.print(prefix + f"photo dates, cameras and sizes read for {report.described} images")
    if report.captions_added or report.captions_removed or report.captions_kept:
        err.print(f"captions: {report.captions_added} added ({report.captions_embedded} embedded), "
                  f"{report.captions_removed} removed, {report.captions_kept} unchanged")
    problems = [(p, r) for p, r in report.failed] + [(s, "") for s in report.caption_skips]
    if problems:
        err.print(f"[yellow]warning:[/] skipped {len(problems)} file(s) or row(s):")
        for path, reason in problems[:20 if not verbose else None]:
            err.print(f"  {escape(path)}" + (f": {escape(reason)}" if reason else ""), soft_wrap=True)
        if len(problems) > 20 and not verbose:
            err.print(f"  ... and {len(problems) - 20} more (-v lists all)")
    if report.known_bad:
        err.print(f"{len(report.known_bad)} unreadable file(s) unchanged since an earlier run were not retried (-v lists them)")
        if verbose:
            for path, reason in report.known_bad:
                err.print(f"  {escape(path)}: {escape(reason)}")
    if report.passed_over:
        err.print(passed_over_summary(report.passed_over) + ("" if verbose else "; -v lists them"))
        if verbose:
            for path in report.passed_over:
                err.print(f"  {escape(printable(path))} ({file_kind(path)})", soft_wrap=True)
    counts = report.counts
    err.print(f"index {escape(str(folder))}: {counts.get('images', 0)} images, {counts.get('captions', 0)} captions",
              soft_wrap=True)


def passed_over_summary(paths) -> str:
    """One line counting the files that are no pictures by kind, most first (ties in FILE_KINDS' order):
    '12 videos, 3 documents not indexed'."""
    from collections import Counter

    from tinymvlm.image_files import FILE_KINDS, file_kind

    counts = Counter(file_kind(path) for path in paths)
    kinds = sorted(counts.items(), key=lambda item: (-item[1], list(FILE_KINDS).index(item[0])))
    return ", ".join(f"{n} {FILE_KINDS[kind] if n > 1 else kind}" for kind, n in kinds) + " not indexed"


def nothing_indexed(report) -> str:
    """The error of a run that left the index empty (exit status non-zero; any other run exits 0)."""
    skipped = len(report.failed) + len(report.known_bad) + len(report.caption_skips)
    if skipped:
        return (f"nothing could be indexed: all {skipped} file(s) or row(s) were skipped (reasons above); "
                "fix or remove them and run again")
    return "nothing could be indexed: no image files (.jpg, .png, .webp, ...) found; check the path"


@click.command("index")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--index", "index_dir", type=click.Path(file_okay=False),
              help="Index folder. Default: $TMV_INDEX, else ~/.local/share/tinymvlm/index ($XDG_DATA_HOME).")
@model_option("Default: the model the index was built with, else the best checkpoint of the latest run under "
              "./runs ($TMV_RUNS), else the built-in model.")
@click.option("--captions", "captions", multiple=True, type=click.Path(dir_okay=False),
              help="Caption file to index for text search: one per line, or a TSV/CSV/JSONL column. Repeatable.")
@click.option("--caption-column", help="Column name (or 0-based number) of the captions in a TSV/CSV/JSONL file.")
@click.option("--exclude", multiple=True, metavar="GLOB",
              help="Skip files/folders whose name or path below PATH matches this glob, e.g. '*.gif', "
                   "'*/thumbnails/*'. Repeatable.")
@click.option("--rebuild", is_flag=True, help="Start over: drop the index and embed everything again. "
                                             "With --merge: replace an index at --index that was not made by merging.")
@click.option("--index-type", type=click.Choice(["auto", "flat", "ivf", "hnsw"]),
              help="FAISS index type. auto (default): exact flat below 200,000 vectors, IVF above. Kept by later runs.")
@click.option("--nlist", type=int, help="IVF cells (default about 4*sqrt(n)).")
@click.option("--nprobe", type=int, help="IVF cells searched per query (default 32).")
@click.option("--hnsw-m", type=int, help="HNSW graph degree (default 32).")
@click.option("--ef-construction", type=int, help="HNSW build breadth (default 80).")
@click.option("--ef-search", type=int, help="HNSW search breadth (default 96).")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--workers", type=int, help="DataLoader processes decoding images (default: one per core, at most 8; "
                                          "shared among the processes of a torchrun job).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 ... (under torchrun: cuda:LOCAL_RANK).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
              help="auto: bf16 on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX), else fp32.")
@click.option("--shard", "shard_text", metavar="I/N",
              help="Index only shard I of N (0-based) into INDEX/shards/I-of-N, e.g. one job per machine; "
                   "then combine them with --merge. Under torchrun each process takes shard RANK/WORLD_SIZE itself.")
@click.option("--merge", is_flag=True, help="Combine finished shards into --index: PATH... are the shard folders "
                                            "(default: every INDEX/shards/I-of-N). Copies vectors, embeds nothing.")
@click.option("--nproc", type=int, help="Index in N processes on this machine (started as torchrun would), then merge.")
@click.option("--wait", is_flag=True, help="If another 'tmv index' holds the index, wait for it instead of exiting.")
@click.option("-v", "--verbose", is_flag=True, help="Show informational messages and every skipped file.")
@quiet_option()
@click.pass_context
@friendly_errors
def index_command(ctx: click.Context, paths, index_dir, model, captions, caption_column, exclude, rebuild, index_type,
          nlist, nprobe, hnsw_m, ef_construction, ef_search, batch_size, workers, device, precision, shard_text, merge,
          nproc, wait, verbose, quiet) -> None:
    """Embed every image under PATH... (and caption files) into an index that later runs update incrementally.

    Only new and changed files are embedded; deleted files are dropped, moved or renamed ones keep their
    vectors (matched by content hash). With no PATH, the folders indexed before are re-scanned. An
    interrupted run keeps every finished batch; run it again to resume. Large collections split across
    processes or machines: see --shard, --merge, --nproc, and torchrun.
    """
    setup_logging(verbose)
    from rich.markup import escape
    from tinymvlm.index import Index
    from tinymvlm.index.jobs import run_index_job, run_merge_job
    from tinymvlm.index.shard import Shard, torchrun_shard

    from tinymvlm import killpoint
    from tinymvlm.errors import TmvError
    from tinymvlm.inference.runtime import Runtime

    killpoint.reached("index command")
    if sum(map(bool, (shard_text, merge, nproc is not None, torchrun_shard()))) > 1:
        raise TmvError("use one of --shard, --merge, --nproc and torchrun at a time")
    if nproc is not None:
        _launch(ctx, nproc)
        return
    spec_settings = {"nlist": nlist, "nprobe": nprobe, "hnsw_m": hnsw_m, "ef_construction": ef_construction,
                     "ef_search": ef_search}
    if merge:
        report = run_merge_job(index_dir, paths, index_type, spec_settings, replace=rebuild, wait=wait)
        _merged(report)
        return
    shard = torchrun_shard()
    note_model(Index(index_dir, checkpoint=model).model_choice(), quiet or (shard is not None and shard.index > 0))
    runtime = Runtime(device, precision, batch_size, workers)
    progress = RichProgress()

    def done(run) -> None:  # this process's folder is complete: its summary comes before any merge
        progress.close()
        print_report(run.report, run.folder, verbose, f"shard {run.shard}: " if run.shard else "")

    try:
        run = run_index_job(index_dir, paths, checkpoint=model, captions=captions, caption_column=caption_column,
                          exclude=exclude, index_type=index_type, spec_settings=spec_settings, runtime=runtime,
                          rebuild=rebuild, wait=wait, shard=Shard.parse(shard_text) if shard_text else None,
                          progress=progress, on_report=done)
    except KeyboardInterrupt:
        err.print("interrupted: every finished batch is kept; run the same command again to resume")
        raise SystemExit(130)
    finally:
        progress.close()
    if run.merged is not None:
        _merged(run.merged)
    elif run.shard is None and not run.report.counts.get("images") and not run.report.counts.get("captions"):
        raise TmvError(nothing_indexed(run.report))
    elif shard_text:
        err.print(f"shard {run.shard} done; once all {run.shard.count} are, combine them: "
                  f"tmv index --merge --index {escape(str(run.index))}")


def _merged(report) -> None:
    from rich.markup import escape

    counts = report.counts
    err.print(f"merged {report.shards} shards into {escape(str(report.folder))} in {report.seconds:.1f} s: "
              f"{counts['images']} images, {counts['captions']} captions, {counts['skipped']} skipped files")


def _launch(ctx: click.Context, nproc: int) -> None:
    """`--nproc N`: this same command in N processes through torchrun's machinery (which merge)."""
    import tempfile

    from tinymvlm import distributed

    options, paths = [], []
    for param in ctx.command.params:
        value = ctx.params[param.name]
        if param.name == "nproc" or value in (None, False, ()):
            continue
        if isinstance(param, click.Argument):
            paths = ["--", *value]  # after "--", a path starting with "-" stays a path
        elif param.is_flag:
            options.append(param.opts[0])
        else:
            for item in value if param.multiple else [value]:
                options += [param.opts[0], str(item)]
    with tempfile.TemporaryDirectory(prefix="tmv-launch-") as tmp:
        distributed.launch(nproc, ["-m", "tinymvlm.cli", "index", *options, *paths], tmp, "indexing",
                           ctx.params["verbose"])
