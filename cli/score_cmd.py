"""`tmv score`: how well each of a few captions fits each image, with no index."""

from __future__ import annotations

import click
from tinymvlm.cli.console import friendly_errors, model_option, note_model, out, quiet_option, setup_logging


class _ScoreCommand(click.Command):
    """`--captions A B C` takes every following word up to the next option, as the original trainer's
    test script did; it is read as `--caption A --caption B --caption C`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        options = {o for p in self.params if isinstance(p, click.Option) for o in p.opts}
        rewritten, taking = [], False
        for arg in args:
            if arg == "--captions":
                taking = True
            elif taking and not (arg in options or arg == "--"):
                rewritten += ["--caption", arg]
            else:
                taking = False
                rewritten.append(arg)
        return super().parse_args(ctx, rewritten)


@click.command(cls=_ScoreCommand)
@click.argument("images", nargs=-1, type=click.Path(dir_okay=False))
@click.option("-c", "--caption", "captions", multiple=True,
              help="A caption to score; repeat it, or give several after --captions.")
@click.option("--captions-file", type=click.Path(dir_okay=False), help="Captions to score, one per line.")
@model_option("Default: the latest run's best.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image on stdout.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
              help="auto: fp32, as for search queries.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 ...")
@click.option("-v", "--verbose", is_flag=True, help="Show informational log messages.")
@quiet_option()
@friendly_errors
def score(images, captions, captions_file, model, as_json, precision, device, verbose, quiet) -> None:
    """Score IMAGES against captions: every caption's cosine similarity and its probability (a softmax
    over the given captions at the model's own temperature), best first.

    \b
    tmv score cat.jpg --captions "a cat" "a dog" "a car"
    tmv score photos/*.jpg --captions-file labels.txt --json
    """
    setup_logging(verbose)
    from pathlib import Path

    from tinymvlm.errors import TmvError

    texts = list(captions)
    if captions_file:
        try:
            lines = Path(captions_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise TmvError(f"cannot read captions file {captions_file}: {exc}") from exc
        texts += [line.strip() for line in lines if line.strip()]
    from dataclasses import replace

    from tinymvlm.inference.runtime import Runtime
    from tinymvlm.inference.score import check_inputs, score_images
    from tinymvlm.models.checkpoint import load_checkpoint
    from tinymvlm.models.resolve import choose_model

    check_inputs(images, texts)
    runtime = replace(Runtime.for_queries(device, precision), batch_size=64).resolve()
    choice = choose_model(model)
    note_model(choice, quiet)
    path = choice.path
    model, tokenizer, _ = load_checkpoint(path)
    results = score_images(model, tokenizer, list(images), texts, runtime)
    if as_json:
        import json

        for result in results:
            out.print(json.dumps(result.to_dict(), ensure_ascii=False), markup=False, highlight=False)
        return
    _print(results)


def _print(results) -> None:
    """A table per image on a terminal; tab-separated image, caption, similarity, probability in a pipe."""
    from rich.markup import escape
    from rich.table import Table

    if not out.is_terminal:
        for result in results:
            for c in result.captions:
                click.echo(f"{result.image}\t{c.caption}\t{c.similarity:.4f}\t{c.probability:.4f}")
        return
    for result in results:
        table = Table(title=escape(result.image), title_justify="left", show_edge=False)
        table.add_column("caption", overflow="fold")
        table.add_column("similarity", justify="right")
        table.add_column("probability", justify="right")
        for c in result.captions:
            table.add_row(escape(c.caption), f"{c.similarity:.4f}", f"{c.probability:.1%}")
        out.print(table)
