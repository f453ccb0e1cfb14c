"""`tmv plot`: draw a training run's curves (loss per step, validation recall per epoch) to a picture."""

from __future__ import annotations

import click
from tinymvlm.cli.console import err, friendly_errors, out


@click.command()
@click.argument("run", required=False, type=click.Path())
@click.option("-o", "--out", "out_path", type=click.Path(dir_okay=False),
              help="PNG or SVG file to write. Default: RUN/curves.png.")
@friendly_errors
def plot(run: str | None, out_path: str | None) -> None:
    """Draw RUN's training loss per step and validation recall per epoch, the best epoch marked.

    RUN is a run folder (default: the latest run under ./runs). `tmv train` redraws RUN/curves.png after
    every epoch by itself; this draws it again, or to another file.

    \b
    tmv plot runs/tux                      writes runs/tux/curves.png
    tmv plot runs/tux -o tux.svg
    """
    from tinymvlm.errors import TmvError
    from tinymvlm.run_folder import latest_run, runs_root
    from tinymvlm.training.curves import draw_curves

    if out_path is not None:
        from tinymvlm.atomic import figure_format

        figure_format(out_path)
    if run is None:
        latest = latest_run()
        if latest is None:
            raise TmvError(f"no training run under {runs_root()}: name a run folder (tmv plot RUN)")
        run = str(latest)
        err.print(f"plotting the latest run, {run}", markup=False)
    out.print(str(draw_curves(run, out_path)), markup=False)
