"""`tmv dupes`: groups of near-duplicate photos among the indexed images, the copy to keep marked."""

from __future__ import annotations

import click
from tinymvlm.cli.console import err, friendly_errors, out, setup_logging


def print_groups(groups) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False)
    table.add_column("group", justify="right")
    table.add_column("similarity", justify="right")
    table.add_column("", justify="left")
    table.add_column("path", overflow="fold")
    for n, group in enumerate(groups, start=1):
        for m, path in enumerate(group.paths):
            table.add_row(str(n) if m == 0 else "", f"{group.similarity:.3f}" if m == 0 else "",
                          "[green]keep[/]" if m == 0 else "", escape(path), end_section=m == len(group.paths) - 1)
    out.print(table)


@click.command("dupes")
@click.option("--index", "index_dir", type=click.Path(file_okay=False),
              help="Index folder. Default: $TMV_INDEX, else ~/.local/share/tinymvlm/index ($XDG_DATA_HOME).")
@click.option("--threshold", type=click.FloatRange(-1, 1),
              help="Embedding similarity a pair needs to be compared by looks (default 0.60; lower finds "
                   "heavier edits, and leaves more for the look check to reject).")
@click.option("--look-threshold", type=click.FloatRange(-1, 1),
              help="Thumbnail correlation a pair needs to be a duplicate (default 0.75).")
@click.option("--json", "as_json", is_flag=True,
              help='One JSON object per group on stdout: {"paths": [...], "keep": path, "similarity": lowest pair}.')
@click.option("-v", "--verbose", is_flag=True, help="Show informational log messages.")
@friendly_errors
def dupes(index_dir, threshold, look_threshold, as_json, verbose) -> None:
    """Find near-duplicate photos in an index: the same photo resized, re-compressed, cropped a little,
    brightened, date-stamped or turned a few degrees. Largest group first; in each, the copy to keep
    (most pixels, then the oldest) comes first. Uses the stored vectors (nothing is embedded again)
    and compares candidate pairs by a small thumbnail, so two different photos of the same kind of
    thing are not grouped. Nothing is deleted: what to do with the others is yours to decide.
    """
    setup_logging(verbose)
    import json
    import sys

    from tinymvlm.index import Index

    with err.status("finding near-duplicates...") as status:
        def decoded(done: int, total: int) -> None:
            status.update(f"comparing candidates by looks: {done}/{total} images")

        groups = Index(index_dir).duplicates(threshold, look_threshold, on_decoded=decoded)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="surrogateescape")
    if as_json:
        for group in groups:
            sys.stdout.write(json.dumps(group.to_dict()) + "\n")
    elif groups:
        print_groups(groups)
    copies = sum(len(g.paths) - 1 for g in groups)
    err.print(f"{len(groups)} group(s) of near-duplicates, {copies} extra copies" if groups else
              "no near-duplicates found")
