"""`tmv index`: embed image folders and caption files into an incremental FAISS index."""

from __future__ import annotations

import click

from .console import err, friendly_errors, setup_logging


class RichProgress:
    """Draws scanning and embedding progress (count, images/s, ETA) on stderr."""

    def __init__(self) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                 TimeRemainingColumn(), console=err, transient=False)
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
        self.progress.stop()


def summarise(report, folder, verbose: bool) -> None:
    from rich.markup import escape

    parts = [f"{report.scanned} image files", f"{report.unchanged} unchanged", f"{report.embedded} embedded"]
    for name in ("added", "updated", "moved", "copied", "touched", "removed"):
        if getattr(report, name):
            parts.append(f"{getattr(report, name)} {name}")
    if report.scanned or report.embedded:
        err.print("images: " + ", ".join(parts) + (f" ({report.images_per_s:.1f} images/s)" if report.embedded else ""))
    if report.captions_added or report.captions_removed or report.captions_kept:
        err.print(f"captions: {report.captions_added} added ({report.captions_embedded} embedded), "
                  f"{report.captions_removed} removed, {report.captions_kept} unchanged")
    problems = [(p, r) for p, r in report.failed] + [(s, "") for s in report.caption_skips]
    if problems:
        err.print(f"[yellow]warning:[/] skipped {len(problems)} file(s) or row(s):")
        for path, reason in problems[:20 if not verbose else None]:
            err.print(f"  {escape(path)}" + (f": {escape(reason)}" if reason else ""))
        if len(problems) > 20 and not verbose:
            err.print(f"  ... and {len(problems) - 20} more (-v lists all)")
    if report.known_bad:
        err.print(f"{len(report.known_bad)} unreadable file(s) unchanged since an earlier run were not retried (-v lists them)")
        if verbose:
            for path, reason in report.known_bad:
                err.print(f"  {escape(path)}: {escape(reason)}")
    counts = report.counts
    err.print(f"index {escape(str(folder))}: {counts.get('images', 0)} images, {counts.get('captions', 0)} captions")


@click.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--index", "index_dir", type=click.Path(file_okay=False),
              help="Index folder. Default: $TMV_INDEX, else ~/.local/share/tinymvlm/index ($XDG_DATA_HOME).")
@click.option("--checkpoint", help="Checkpoint file or run folder. Default: the model the index was built with, "
                                   "else the best checkpoint of the latest run under ./runs ($TMV_RUNS).")
@click.option("--captions", "captions", multiple=True, type=click.Path(dir_okay=False),
              help="Caption file to index for text search: one per line, or a TSV/CSV/JSONL column. Repeatable.")
@click.option("--caption-column", help="Column name (or 0-based number) of the captions in a TSV/CSV/JSONL file.")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Skip files/folders matching this glob (relative path or name). Repeatable.")
@click.option("--rebuild", is_flag=True, help="Start over: drop the index and embed everything again.")
@click.option("--index-type", type=click.Choice(["auto", "flat", "ivf", "hnsw"]),
              help="FAISS index type. auto (default): exact flat below 200,000 vectors, IVF above. Kept by later runs.")
@click.option("--nlist", type=int, help="IVF cells (default about 4*sqrt(n)).")
@click.option("--nprobe", type=int, help="IVF cells searched per query (default 32).")
@click.option("--hnsw-m", type=int, help="HNSW graph degree (default 32).")
@click.option("--ef-construction", type=int, help="HNSW build breadth (default 80).")
@click.option("--ef-search", type=int, help="HNSW search breadth (default 96).")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--workers", type=int, help="DataLoader processes decoding images (default: one per core, at most 8).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 ...")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
              help="auto: bf16 on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX), else fp32.")
@click.option("--wait", is_flag=True, help="If another 'tmv index' holds the index, wait for it instead of exiting.")
@click.option("-v", "--verbose", is_flag=True, help="Show informational messages and every skipped file.")
@friendly_errors
def index(paths, index_dir, checkpoint, captions, caption_column, exclude, rebuild, index_type, nlist, nprobe,
          hnsw_m, ef_construction, ef_search, batch_size, workers, device, precision, wait, verbose) -> None:
    """Embed every image under PATH... (and caption files) into an index that later runs update incrementally.

    Only new and changed files are embedded; deleted files are dropped, moved or renamed ones keep their
    vectors (matched by content hash). With no PATH, the folders indexed before are re-scanned. An
    interrupted run keeps every finished batch; run it again to resume.
    """
    setup_logging(verbose)
    from tinymvlm.index import EmbedConfig, Index, IndexSpec

    spec_flags = {"nlist": nlist, "nprobe": nprobe, "hnsw_m": hnsw_m, "ef_construction": ef_construction,
                  "ef_search": ef_search}
    idx = Index(index_dir, checkpoint=checkpoint, device=device, precision=precision)
    spec = None
    if index_type is not None or any(v is not None for v in spec_flags.values()):
        base = idx.info()["spec"] if idx.store.exists() and not rebuild else {}
        base.update({k: v for k, v in spec_flags.items() if v is not None})
        if index_type is not None:
            base["type"] = index_type
        spec = IndexSpec(**base)
    progress = RichProgress()
    try:
        report = idx.add(paths, captions=captions, exclude=exclude, caption_column=caption_column, spec=spec,
                         embed=EmbedConfig(batch_size=batch_size, workers=workers, device=device, precision=precision),
                         rebuild=rebuild, wait=wait, progress=progress)
    except KeyboardInterrupt:
        progress.close()
        err.print("interrupted: every finished batch is kept; run the same command again to resume")
        raise SystemExit(130)
    finally:
        progress.close()
    summarise(report, idx.folder, verbose)
