"""`tmv models`: the models this machine can use now, and the pretrained CLIPs worth importing."""

from __future__ import annotations

import click
from tinymvlm.cli.console import friendly_errors, out, setup_logging


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@friendly_errors
def models(as_json: bool) -> None:
    """List the built-in model, the runs under ./runs ($TMV_RUNS), the pretrained CLIPs imported into the user
    cache, and recommended hub models with their published zero-shot recall and their speed measured on a CPU.

    Any of them goes to --model of index, search, serve, score and eval; a hub model is downloaded and
    imported the first time it is named.
    """
    setup_logging()
    from dataclasses import asdict

    from tinymvlm.models.catalogue import BUILTIN_SPEED, RECOMMENDED, SPEED_COMMAND, SPEED_MACHINE, local_models

    local = local_models()
    imported = {m.ref for m in local if m.kind == "imported"}
    recommended = [{**asdict(m), "imported": m.ref in imported} for m in RECOMMENDED]
    if as_json:
        import json

        click.echo(json.dumps({"local": [m.to_dict() for m in local], "recommended": recommended,
                               "builtin_speed": asdict(BUILTIN_SPEED), "speed_command": SPEED_COMMAND,
                               "speed_machine": SPEED_MACHINE}, indent=2))
        return
    _print_local(local, BUILTIN_SPEED)
    _print_recommended(recommended, SPEED_COMMAND, SPEED_MACHINE)


def _size(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n else "-"


def _print_local(local, builtin_speed) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="on this machine (--model takes the first column)", title_justify="left", show_edge=False)
    table.add_column("model", no_wrap=True)
    for name in ("kind", "size", "notes"):
        table.add_column(name, overflow="fold")
    for m in local:
        notes = ["default outside an index"] if m.default else []
        if m.kind == "builtin":
            notes.append("built into the cache on first use" if m.path is None else "ImageNet classes and their WordNet kinds read as text, a face as a person")
            notes.append(f"index {builtin_speed.index_fp32:.1f} img/s fp32, query {builtin_speed.warm_query_ms:.0f} ms")
        if m.kind == "run" and m.epoch is not None:
            recall = ", ".join(f"{k} {v:.1f}" for k, v in m.metrics.items() if k.endswith("_R@1"))
            notes.append(f"best epoch {m.epoch}" + (f": {recall}" if recall else ""))
        table.add_row(escape(m.ref), m.kind, _size(m.size_bytes), escape("; ".join(notes)))
    out.print(table)


def _print_recommended(recommended: list[dict], command: str, machine: str) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="recommended from the Hugging Face hub (downloaded on first use)", title_justify="left",
                  show_edge=False)
    table.add_column("model", no_wrap=True)
    for name in ("Flickr30k R@1 t2i/i2t", "index img/s fp32", "query ms", "peak MiB", "imported"):
        table.add_column(name, overflow="fold")
    for m in recommended:
        speed = m["speed"] or {}

        def shown(key: str, fmt: str) -> str:
            return format(speed[key], fmt) if key in speed else "-"

        table.add_row(escape(m["ref"]), f"{m['t2i_r1']:.1f} / {m['i2t_r1']:.1f}", shown("index_fp32", ".1f"),
                      shown("warm_query_ms", ".0f"), shown("peak_mib", ".0f"), "yes" if m["imported"] else "no")
    out.print(table)
    out.print(f"recall: published zero-shot figures; speed: measured with random weights of the real size on "
              f"{machine} ({command})", markup=False)
