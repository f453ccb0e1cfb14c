"""`tmv search`: text→image, image→image, text→text and image→text search of an index."""

from __future__ import annotations

import click
from tinymvlm.cli.console import err, friendly_errors, model_option, note_model, out, quiet_option, setup_logging


def print_table(hits, texts: bool) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False)
    table.add_column("rank", justify="right")
    table.add_column("score", justify="right")
    table.add_column("caption" if texts else "path", overflow="fold")
    for hit in hits:
        table.add_row(str(hit.rank), f"{hit.score:.4f}", escape(hit.label))
    out.print(table)


def json_line(hit) -> str:
    """One hit as JSON. A file name that is not UTF-8 keeps its odd bytes as \\udcXX escapes, which
    Python's json and os.fsencode turn back into the name; any other line is plain UTF-8."""
    import json

    try:
        hit.label.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(hit.to_dict())
    return json.dumps(hit.to_dict(), ensure_ascii=False)


@click.command()
@click.argument("query", nargs=-1)
@click.option("--index", "index_dir", type=click.Path(file_okay=False),
              help="Index folder. Default: $TMV_INDEX, else ~/.local/share/tinymvlm/index ($XDG_DATA_HOME).")
@model_option("Default: the one the index was built with.")
@click.option("-k", "--top", "k", type=int, default=10, show_default=True, help="Number of results.")
@click.option("--image", "images", multiple=True, type=click.Path(dir_okay=False),
              help="Query image (image→image, or image→text with --texts). Repeatable; adds to a text query.")
@click.option("--texts", is_flag=True, help="Search the indexed captions instead of the images.")
@click.option("--literal", is_flag=True, help="Search QUERY's words exactly as written: no operators, weights or image paths.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per result on stdout.")
@click.option("--paths-only", is_flag=True, help="Only the paths (or captions), one per line.")
@click.option("--html", "html_file", type=click.Path(dir_okay=False), help="Also write a contact sheet of the hits to this HTML file.")
@click.option("--after", help="Only images taken on or after this date (YYYY-MM-DD; EXIF date, else file time).")
@click.option("--before", help="Only images taken before this date (YYYY-MM-DD).")
@click.option("--folder", "folders", multiple=True,
              help="Only images under this folder: absolute, or relative to the indexed folders. Repeatable.")
@click.option("--min-score", type=click.FloatRange(-1, 1), help="Leave out results scoring below this (cosine similarity, -1..1).")
@click.option("--nprobe", type=int, help="IVF cells to search (more: slower, better recall).")
@click.option("--ef-search", type=int, help="HNSW search breadth (more: slower, better recall).")
@click.option("--device", default="auto", show_default=True, help="Device for embedding the query: auto, cpu, cuda, cuda:1 ...")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
              help="auto: fp32 (a single query gains nothing from bf16).")
@click.option("-v", "--verbose", is_flag=True, help="Show informational log messages.")
@quiet_option()
@friendly_errors
def search(query, index_dir, model, k, images, texts, literal, as_json, paths_only, html_file, after, before, folders,
           min_score, nprobe, ef_search, device, precision, verbose, quiet) -> None:
    """Search an index with QUERY: text, an image path, or a weighted mix like  cat + "in snow" - dog:0.5

    Text is searched as written ("a clock showing 10:30"); ' + ' and ' - ' between spaces combine
    terms, TERM:WEIGHT weights one within such a mix, and double quotes make a term literal.

    Results go to stdout (a table on a terminal, tab-separated rank/score/path in a pipe, or --json /
    --paths-only); messages go to stderr.
    """
    setup_logging(verbose)
    import sys

    from tinymvlm.index import Index
    from tinymvlm.index.filters import SearchFilter

    from tinymvlm.errors import TmvError
    from tinymvlm.inference.runtime import Runtime

    if as_json and paths_only:
        raise TmvError("choose one of --json and --paths-only")
    text = " ".join(query)
    where = SearchFilter.parse(after, before, folders)
    idx = Index(index_dir, checkpoint=model, runtime=Runtime.for_queries(device, precision))
    hits = idx.search(text or None, images, k=k, texts=texts, nprobe=nprobe, ef_search=ef_search, literal=literal,
                      where=where, min_score=min_score)
    note_model(idx.model_choice(), quiet)
    if html_file:
        from tinymvlm.serve.contact_sheet import contact_sheet

        from tinymvlm.atomic import write_text

        label = " + ".join([text] * bool(text) + [f"image {i}" for i in images])
        write_text(html_file, contact_sheet(hits, label))
        err.print(f"wrote {html_file}", markup=False)
    if not hits and (where.active or min_score is not None):
        err.print("no results match the filters" + (f" and score at least {min_score}" if min_score is not None else ""))
    elif not hits:
        err.print("no results: the index is empty" + (" of captions (index some with --captions FILE)" if texts else ""))
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="surrogateescape")  # a file name that is not UTF-8 prints as its own bytes
    if as_json:
        for hit in hits:
            sys.stdout.write(json_line(hit) + "\n")
    elif paths_only:
        for hit in hits:
            sys.stdout.write(hit.label + "\n")
    elif sys.stdout.isatty():
        print_table(hits, texts)
    else:
        for hit in hits:
            sys.stdout.write(f"{hit.rank}\t{hit.score:.4f}\t{hit.label}\n")
    sys.stdout.flush()
