"""Where output goes: results to stdout (so they pipe), progress and messages to stderr."""

from __future__ import annotations

import functools
import logging
import os
import sys
from typing import Callable

from rich.console import Console

err = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


def progress(*columns, transient: bool = True):
    """A progress display on stderr: rich's live bar on a terminal, plain lines anywhere else (a log
    keeps no half-drawn bar)."""
    from rich.progress import Progress

    from tinymvlm.cli.plain_progress import PlainProgress

    if err.is_terminal:
        return Progress(*columns, console=err, transient=transient)
    return PlainProgress(*columns, console=err)


def setup_logging(verbose: bool = False) -> None:
    """Library code logs; this shows warnings (one line each) on stderr, quiets third-party chatter."""
    from rich.logging import RichHandler

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' bars follow this too
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # read when transformers is first imported
    handler = RichHandler(console=err, show_time=False, show_path=False, markup=False)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler], format="%(message)s", force=True)
    for noisy in ("transformers", "timm", "datasets", "huggingface_hub", "httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    from tinymvlm.models import download

    download.set_reporter(DownloadBar())
    if "transformers" in sys.modules:  # imported already (by an API caller, a test): tell it directly.
        transformers = sys.modules["transformers"]  # Importing it here would cost a text search 3 s.
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()


class DownloadBar:
    """A hub model's first download as a progress bar on stderr (size, rate, time left)."""

    def __init__(self) -> None:
        self.progress = self.task = None

    def start(self, ref: str, total_bytes: int) -> None:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

        self.progress = Progress(TextColumn("downloading {task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(), console=err)
        self.task = self.progress.add_task(ref, total=total_bytes)
        self.progress.start()

    def advance(self, n_bytes: int) -> None:
        if self.progress is not None:
            self.progress.advance(self.task, n_bytes)

    def finish(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def warn_skipped(name: str, skipped: list) -> None:
    """The rows a data source skipped, with their reasons (the first ten), on stderr."""
    if not skipped:
        return
    from rich.markup import escape

    err.print(f"[yellow]warning:[/] skipped {len(skipped)} row(s) of {escape(name)}:")
    for skip in skipped[:10]:
        err.print(f"  {escape(str(skip))}")
    if len(skipped) > 10:
        err.print(f"  ... and {len(skipped) - 10} more")


def friendly_errors(func: Callable) -> Callable:
    """Turn TmvError into `error: ...` on one line with exit status 2; Ctrl-C into status 130."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from tinymvlm.errors import TmvError

        try:
            return func(*args, **kwargs)
        except TmvError as exc:
            from rich.markup import escape

            from tinymvlm.distributed import record_failure

            if record_failure(str(exc)):  # a process of `--nproc`: its launcher reports the first failure
                sys.exit(2)
            err.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
            sys.exit(2)
        except KeyboardInterrupt:
            err.print("interrupted")
            sys.exit(130)

    return wrapper


def model_option(default: str) -> Callable:
    """`--model` (also spelled `--checkpoint`, its older name): one option, one dest, on every command
    that loads a model; `default` says what the command uses without it."""
    import click

    return click.option("--model", "--checkpoint", "model", metavar="MODEL",
                        help="hf:ORG/NAME or a Hugging Face CLIP/SigLIP folder, open_clip:ARCH/TAG|FILE, a tmv "
                             f"checkpoint or run folder, or builtin. {default}")


def quiet_option() -> Callable:
    """`-q`: no line naming the model (the one `note_model` prints)."""
    import click

    return click.option("-q", "--quiet", is_flag=True, help="Do not say which model is used (on stderr).")


def note_model(choice, quiet: bool = False) -> None:
    """The one line a command that embeds prints about its model (a `ModelChoice`): which one and why; for
    the built-in model, what to use instead for folders full of people."""
    if quiet:
        return
    from tinymvlm.models.builtin import is_builtin
    from tinymvlm.models.catalogue import PEOPLE, label
    from tinymvlm.models.resolve import GIVEN, INDEX_BUILT

    line = f"model: {label(choice.path)} ({choice.reason})"
    if is_builtin(choice.path) and choice.reason != GIVEN:
        rebuild = "tmv index --rebuild " if choice.reason == INDEX_BUILT else ""
        line += f"; for folders full of people: {rebuild}--model {PEOPLE.ref}; 'tmv models' lists all"
    elif choice.reason != GIVEN and choice.reason != INDEX_BUILT:
        line += "; --model picks another, 'tmv models' lists all"
    err.print(line, markup=False, highlight=False)
