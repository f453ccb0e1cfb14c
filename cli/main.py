"""The `tmv` command group. Each command lives in its own module and imports torch only when run."""

from __future__ import annotations

import click

from tinymvlm import __version__

from .eval_cmd import eval_cmd
from .index_cmd import index
from .score_cmd import score
from .search_cmd import search
from .serve_cmd import serve
from .train_cmd import train


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="tmv")
def cli() -> None:
    """Train a small CLIP-style model, index images with FAISS, search and evaluate."""


cli.add_command(train)
cli.add_command(index)
cli.add_command(search)
cli.add_command(score)
cli.add_command(serve)
cli.add_command(eval_cmd, name="eval")


def main() -> None:
    cli(prog_name="tmv")


if __name__ == "__main__":
    main()
