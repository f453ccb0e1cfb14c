"""The `tmv` command group. Each command lives in its own module and imports torch only when run."""

from __future__ import annotations

import click
from tinymvlm.cli.dupes_cmd import dupes
from tinymvlm.cli.eval_cmd import eval_cmd
from tinymvlm.cli.index_cmd import index_command
from tinymvlm.cli.plot_cmd import plot
from tinymvlm.cli.models_cmd import models
from tinymvlm.cli.score_cmd import score
from tinymvlm.cli.search_cmd import search
from tinymvlm.cli.serve_cmd import serve
from tinymvlm.cli.train_cmd import train

from tinymvlm import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="tmv")
def cli() -> None:
    """Train a small CLIP-style model, index images with FAISS, search and evaluate."""


cli.add_command(train)
cli.add_command(index_command)
cli.add_command(search)
cli.add_command(score)
cli.add_command(serve)
cli.add_command(dupes)
cli.add_command(eval_cmd, name="eval")
cli.add_command(plot)
cli.add_command(models)


def main() -> None:
    cli(prog_name="tmv")


if __name__ == "__main__":
    main()
