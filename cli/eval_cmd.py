"""`tmv eval`: retrieval recall@k both ways (the multi-caption protocol) or zero-shot classification."""

from __future__ import annotations

import click
from tinymvlm.cli.console import (err, friendly_errors, model_option, note_model, out, progress, quiet_option,
                                  setup_logging, warn_skipped)

DEFAULT_KS = (1, 5, 10)


class _EvalCommand(click.Command):
    """`--recall 1 5 -1` would read '-1' as an unknown option; report it as the bad k it is."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        takes_value = {o for p in self.params if isinstance(p, click.Option) and not p.is_flag for o in p.opts}
        for before, arg in zip([""] + args, args):
            if arg.startswith("-") and arg[1:].isdigit() and before not in takes_value:
                err.print(f"[bold red]error:[/] recall k must be a positive integer, got {arg}")
                ctx.exit(2)
        return super().parse_args(ctx, args)


class _ImageProgress:
    """Progress while images are embedded: a transient bar on a terminal, plain lines in a log."""

    def __init__(self, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

        from tinymvlm.cli.plain_progress import RateColumn

        self.progress = progress(TextColumn("embedding images"), BarColumn(), MofNCompleteColumn(),
                                 RateColumn("images"), TextColumn("ETA"), TimeRemainingColumn())
        self.task = self.progress.add_task("embedding images", total=total)

    def __enter__(self) -> "_ImageProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def __call__(self, n: int) -> None:
        self.progress.advance(self.task, n)


def _retrieval_table(title: str, metrics: dict[str, float], ks: list[int]):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("direction")
    for k in ks:
        table.add_column(f"R@{k}", justify="right")
    table.add_column("mean rank", justify="right")
    table.add_column("median rank", justify="right")
    for prefix, label in (("t2i", "text → image"), ("i2t", "image → text")):
        table.add_row(label, *[f"{metrics[f'{prefix}_R@{k}']:.2f}" for k in ks],
                      f"{metrics[f'{prefix}_mean_rank']:.1f}", f"{metrics[f'{prefix}_median_rank']:.0f}")
    return table


def _zeroshot_tables(title: str, result) -> list:
    from rich.markup import escape
    from rich.table import Table

    summary = Table(title=title, title_justify="left")
    names = {"acc1": "top-1 accuracy", "acc5": "top-5 accuracy", "mean_per_class_recall": "mean per-class recall"}
    summary.add_column("metric")
    summary.add_column("%", justify="right")
    for key, value in result.metrics.items():
        summary.add_row(names[key], f"{value:.2f}")
    per_class = Table(title="per class", title_justify="left")
    for col in ("class", "images", "recall %", "most often predicted as"):
        per_class.add_column(col, justify="left" if col[0] in "cm" else "right")
    recall = result.per_class_recall()
    for i, name in enumerate(result.classes):
        row = result.confusion[i]
        top = int(row.argmax()) if row.sum() else None
        per_class.add_row(escape(name), str(int(row.sum())), "-" if recall[name] is None else f"{recall[name]:.1f}",
                          "-" if top is None else escape(result.classes[top]))
    confused = Table(title="most confused (true → predicted)", title_justify="left")
    for col in ("true", "predicted", "images", "% of true class"):
        confused.add_column(col, justify="left" if col in ("true", "predicted") else "right")
    for true, pred, n, share in result.most_confused():
        confused.add_row(escape(true), escape(pred), str(n), f"{share:.1f}")
    return [summary, per_class, confused]


@click.command(cls=_EvalCommand)
@click.argument("ks", nargs=-1, type=int, metavar="[K]...")
@click.option("--recall", is_flag=True, help="Retrieval R@K for the K values given as arguments (default 1 5 10); the default task.")
@click.option("--zeroshot", is_flag=True, help="Zero-shot classification of labelled images instead of retrieval.")
@model_option("Default: the latest run's best.")
@click.option("--data", help="Evaluation data (any source tmv train reads; for --zeroshot also class subfolders or an IDX folder). "
                             "Default: the checkpoint's run validation data.")
@click.option("--split", help="Dataset or IDX split (default test; Flickr30k's 1k test split).")
@click.option("--image-root", help="Folder that relative image paths in a pairs file start from.")
@click.option("--image-column", help="Image column of a pairs file or dataset.")
@click.option("--caption-column", help="Caption column of a pairs file or dataset.")
@click.option("--label-column", help="Label column for --zeroshot (default 'label').")
@click.option("--classes", "classes_file", type=click.Path(dir_okay=False), help="Class names, one a line in label order, for numeric labels.")
@click.option("--template", "templates", multiple=True, help="Prompt template with {} for the class name; repeat to average several.")
@click.option("--limit", type=int, help="Evaluate an evenly spaced sample of N images (a quick check).")
@click.option("--index", "index_dir", type=click.Path(file_okay=False), help="Also evaluate what this FAISS index returns (the recall cost of an approximate index).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the metrics, dataset and checkpoint to this JSON file.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Draw recall@k against k (1 to 50) for both directions to this PNG or SVG file.")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--workers", type=int, help="DataLoader processes decoding images (default: one per core, at most 8).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
              help="auto: bf16 on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX), else fp32.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 ...")
@click.option("-v", "--verbose", is_flag=True, help="Show informational log messages.")
@quiet_option()
@friendly_errors
def eval_cmd(ks: tuple[int, ...], recall: bool, zeroshot: bool, model: str | None, data: str | None, split: str | None,
             image_root: str | None, image_column: str | None, caption_column: str | None, label_column: str | None,
             classes_file: str | None, templates: tuple[str, ...], limit: int | None, index_dir: str | None,
             json_path: str | None, plot_path: str | None, batch_size: int, workers: int | None, precision: str, device: str,
             verbose: bool, quiet: bool) -> None:
    """Evaluate a checkpoint: text→image and image→text recall@K over every caption, or zero-shot accuracy.

    Every caption is a text→image query; an image→text query hits if any of the image's captions is in
    the top K. Ties count as hits; a caption string shared by several images hits only its own image.

    \b
    tmv eval --recall 1 5 10                      latest run's best checkpoint, its validation data
    tmv eval --model runs/x --data nlphuji/flickr30k --recall 1 5 10 --json flickr.json
    tmv eval --zeroshot --data /usr/share/datasets/fashion-mnist --split test
    """
    setup_logging(verbose)
    import json

    from tinymvlm.errors import TmvError

    if zeroshot and (recall or ks):
        raise TmvError("--zeroshot reports top-1/top-5 accuracy; drop --recall and the K values")
    if zeroshot and plot_path:
        raise TmvError("--plot draws retrieval recall@k; it does not combine with --zeroshot")
    if plot_path:
        from tinymvlm.atomic import figure_format

        figure_format(plot_path)
    if zeroshot and index_dir:
        raise TmvError("--index evaluates retrieval; it does not combine with --zeroshot")
    if not zeroshot and (label_column or classes_file or templates):
        raise TmvError("--label-column, --classes and --template are for --zeroshot")
    if limit is not None and limit <= 0:
        raise TmvError(f"--limit must be positive, not {limit}")

    from tinymvlm.atomic import write_text
    from tinymvlm.evaluation.recall_at_k import check_ks
    from tinymvlm.evaluation.retrieval import evaluation_record
    from tinymvlm.inference.runtime import Runtime
    from tinymvlm.models.checkpoint import load_checkpoint, read_metadata
    from tinymvlm.models.resolve import choose_model
    from tinymvlm.training.run_config import run_config

    ks_list = check_ks(ks or DEFAULT_KS) if not zeroshot else []
    runtime = Runtime(device, precision, batch_size, workers).resolve()
    choice = choose_model(model)
    note_model(choice, quiet)
    path = choice.path
    read_metadata(path)  # an unknown format fails here, before any data is read
    if zeroshot:
        evaluation = _zeroshot_data(data, split, image_root, image_column, label_column, classes_file, templates, limit)
    else:
        evaluation = _retrieval_data(path, data, split, image_root, image_column, caption_column, limit)
    index = _open_index(index_dir, path) if index_dir else None
    try:
        model, tokenizer, meta = load_checkpoint(path)
        if zeroshot:
            task = _zeroshot(model, tokenizer, *evaluation, runtime)
        else:
            task = _retrieval(model, tokenizer, evaluation, ks_list, runtime, index, plot_path)
        run = run_config(path)
        record = evaluation_record(path, meta, run.to_dict() if run else None, runtime, task, data, split, limit)
    finally:
        if index is not None:
            index.close()
    if json_path:
        write_text(json_path, json.dumps(record, indent=2) + "\n")
        err.print(f"wrote {json_path}", markup=False)


def _retrieval_data(path, data, split, image_root, image_column, caption_column, limit):
    """The evaluation pairs: --data (its test split for datasets), else the checkpoint's run validation set."""
    from tinymvlm.data.pairs import load_pairs, require_pairs
    from tinymvlm.evaluation.zeroshot import spread
    from tinymvlm.training.run_config import validation_pairs

    if data is None:
        pairs = validation_pairs(path)
        err.print(f"evaluating on the run's validation data: {pairs.name}", markup=False)
    else:
        pairs = require_pairs(load_pairs(data, image_root, image_column, caption_column, split or "test"))
    warn_skipped(pairs.name, pairs.skipped)
    sample = spread(len(pairs), limit)
    return pairs if sample is None else pairs.subset(sample)


def _retrieval(model, tokenizer, pairs, ks, runtime, index, plot_path) -> dict:
    from rich.markup import escape

    from tinymvlm.evaluation.retrieval import evaluate_retrieval

    with _ImageProgress(len(pairs)) as progress:
        result = evaluate_retrieval(model, tokenizer, pairs, ks, runtime, progress)
    title = f"{escape(pairs.name)}: {result.images} images, {result.captions} captions"
    out.print(_retrieval_table(title, result.metrics, ks))
    if result.shared_captions:
        err.print(f"{result.shared_captions} caption row(s) share their text with another image; "
                  f"each counts as a hit only for its own image")
    record = result.record(pairs)
    if plot_path:
        from tinymvlm.evaluation.recall_curve import draw_recall_curve, recall_curve

        drawn = draw_recall_curve(recall_curve(result.embedded, ks, result.ranks), plot_path,
                                  f"{pairs.name}: {result.images} images, {result.captions} captions")
        err.print(f"wrote {drawn}", markup=False)
    if index is not None:
        record["index"] = _run_index(index, pairs, result, ks)
    return record


def _open_index(index_dir, path):
    """The index, checked up front: it exists and was built with this checkpoint's model."""
    from tinymvlm.index import Index

    index = Index(index_dir, checkpoint=path)
    try:
        index.searcher()
    except BaseException:
        index.close()
        raise
    return index


def _run_index(index, pairs, result, ks) -> dict:
    """The same queries through the index: what it returns against exact search of its vectors."""
    from rich.markup import escape
    from rich.table import Table

    err.print(f"searching index {index.folder}", markup=False)
    record = index.evaluate(pairs, result.embedded, ks)
    index_dir = index.folder
    if record["eval_images_missing"]:
        err.print(f"[yellow]warning:[/] {record['eval_images_missing']} of {len(pairs)} evaluation images are not in "
                  f"the index; they are left out of the index rows")
    table = Table(title=f"index {escape(str(index_dir))}: {record['images_in_index']} images, "
                        f"{record['captions_in_index']} captions ({escape(', '.join(sorted(set(record['types'].values()))))})",
                  title_justify="left")
    table.add_column("direction")
    table.add_column("search")
    for k in ks:
        table.add_column(f"R@{k}", justify="right")
    for prefix, label in (("t2i", "text → image"), ("i2t", "image → text")):
        if f"{prefix}_R@{ks[0]}" not in record["search"]:
            continue
        for name, key in (("index", "search"), ("exact", "exact")):
            table.add_row(label, name, *[f"{record[key][f'{prefix}_R@{k}']:.2f}" for k in ks])
        table.add_row(label, "recall cost", *[f"{record['recall_cost'][f'{prefix}_R@{k}']:.2f}" for k in ks])
    out.print(table)
    return record


def _zeroshot_data(data, split, image_root, image_column, label_column, classes_file, templates, limit):
    """(labelled images, prompt templates) for --zeroshot."""
    from tinymvlm.errors import TmvError
    from tinymvlm.evaluation.zeroshot import check_templates, load_labelled, read_class_names, spread

    if data is None:
        raise TmvError("--zeroshot needs --data: a folder of class subfolders, an IDX folder such as "
                       "/usr/share/datasets/fashion-mnist, or a pairs file with a label column")
    templates = check_templates(templates)
    classes = read_class_names(classes_file) if classes_file else None
    labelled = load_labelled(data, split, image_root, image_column, label_column, classes)
    warn_skipped(labelled.name, labelled.skipped)
    sample = spread(len(labelled), limit)
    return (labelled if sample is None else labelled.subset(sample)), templates


def _zeroshot(model, tokenizer, labelled, templates, runtime) -> dict:
    from rich.markup import escape

    from tinymvlm.evaluation.zeroshot import evaluate_zeroshot

    with _ImageProgress(len(labelled)) as progress:
        result = evaluate_zeroshot(model, tokenizer, labelled, templates, runtime, progress)
    title = (f"{escape(labelled.name)}: zero-shot, {len(labelled)} images, {len(labelled.classes)} classes, "
             f"{len(templates)} template(s)")
    for table in _zeroshot_tables(title, result):
        out.print(table)
    return result.record(labelled, templates)
