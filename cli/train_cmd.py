"""`tmv train`: contrastive training with a rich progress bar on stderr."""

from __future__ import annotations

import click
from tinymvlm.cli.console import err, friendly_errors, progress, setup_logging, warn_skipped


class RichReporter:
    """Draws training progress (loss, lr, pairs/s, ETA), validation progress and epoch summaries on
    stderr: live bars on a terminal that vanish when done (the epoch lines are the record), plain
    lines in a log."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                 TimeRemainingColumn())
        self.task = None
        self.work = None  # a long step outside the optimiser steps: caching features, validating
        self.work_unit, self.work_done, self.work_since = "", 0, 0.0

    def notice(self, message: str) -> None:
        from rich.markup import escape

        err.print(escape(message))

    def skipped(self, pairs) -> None:
        warn_skipped(pairs.name, pairs.skipped)

    def start(self, total_steps: int, start_step: int, info: dict) -> None:
        processes = f" in each of {info['processes']} processes" if info.get("processes", 1) > 1 else ""
        prior = f", label prior over {info['label_prior']} tower classes" if info.get("label_prior") else ""
        prior += " and found faces" if info.get("people") else ""
        err.print(f"training on {info['train_images']} images / {info['train_captions']} captions, "
                  f"validating on {info['val_images']} images, device {info['device']}{processes}{prior}, "
                  f"run folder {info['run_dir']}")
        self.progress.start()
        self.task = self.progress.add_task("train", total=total_steps, completed=start_step, stats="")

    def step(self, step: int, epoch: int, loss: float, lr: float, pairs_per_s: float) -> None:
        self.progress.update(self.task, completed=step, description=f"epoch {epoch}",
                             stats=f"loss {loss:.3f}  lr {lr:.2e}  {pairs_per_s:.1f} pairs/s")

    def validating(self, epoch: int) -> None:
        self.progress.update(self.task, description=f"epoch {epoch} validating")

    def work_started(self, description: str, total: int, unit: str) -> None:
        import time

        self.progress.start()
        self.work = self.progress.add_task(description, total=total, stats="")
        self.work_unit, self.work_done, self.work_since = unit, 0, time.perf_counter()

    def work_advanced(self, count: int) -> None:
        import time

        if self.work is not None:
            self.work_done += count
            rate = self.work_done / max(time.perf_counter() - self.work_since, 1e-9)
            self.progress.update(self.work, completed=self.work_done, stats=f"{rate:.1f} {self.work_unit}/s")

    def work_finished(self) -> None:
        if self.work is not None:
            self.progress.remove_task(self.work)
            self.work = None

    def epoch_end(self, record: dict) -> None:
        self.progress.update(self.task, description=f"epoch {record['epoch']}")
        line = f"epoch {record['epoch']}: loss {record['train_loss']:.4f}, {record['pairs_per_s']:.1f} pairs/s"
        if "val" in record:
            v = record["val"]
            line += (f"; val t2i R@1/5/10 {v['t2i_R@1']:.1f}/{v['t2i_R@5']:.1f}/{v['t2i_R@10']:.1f}"
                     f", i2t R@1/5/10 {v['i2t_R@1']:.1f}/{v['i2t_R@5']:.1f}/{v['i2t_R@10']:.1f}")
        self.progress.console.print(line, soft_wrap=True)

    def close(self) -> None:
        self.progress.stop()


def config_params(cls: type) -> list[click.Option]:
    """One click option per option of a config dataclass, with the field's default and help: the
    flags cannot drift from the config."""
    from tinymvlm.options import options_of

    params = []
    for option in options_of(cls):
        if option.type is bool:
            off = option.off or "--no-" + option.flag[2:]
            params.append(click.Option([f"{option.flag}/{off}", option.name], default=option.default,
                                       show_default=True, help=option.help))
        else:
            kind = click.Choice(option.choices) if option.choices else option.type
            params.append(click.Option([option.flag, option.name], type=kind, default=option.default,
                                       show_default=option.default is not None, help=option.help))
    return params


class _TrainCommand(click.Command):
    """`tmv train` with TrainConfig's options after `--config`, built when first needed: the config
    imports the towers' defaults (and torch), which listing the commands must not."""

    @property
    def params(self) -> list[click.Parameter]:
        if self._all is None:
            from tinymvlm.training.config import TrainConfig

            self._all = self._own[:1] + config_params(TrainConfig) + self._own[1:]
        return self._all

    @params.setter
    def params(self, value: list[click.Parameter]) -> None:
        self._own, self._all = value, None


@click.command(cls=_TrainCommand)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML file of options; flags override it.")
@click.option("--nproc", type=int,
              help="Train in N processes on this machine (one per GPU; gloo on CPU), started as torchrun would.")
@click.option("-v", "--verbose", is_flag=True, help="Show informational log messages.")
@click.pass_context
@friendly_errors
def train(ctx: click.Context, config_path: str | None, verbose: bool, nproc: int | None, **params) -> None:
    """Train a contrastive image-text model and write checkpoints to a run folder."""
    setup_logging(verbose)
    from tinymvlm.distributed import is_main_process
    from tinymvlm.options import from_flat
    from tinymvlm.training.config import TrainConfig
    from tinymvlm.training.run_config import read_options
    from tinymvlm.training.trainer import train as run_training

    given = read_options(config_path) if config_path else {}
    given.update({name: value for name, value in params.items()
                  if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT})
    cfg = from_flat(TrainConfig, given, "the options given")
    if nproc is not None:
        _launch(given, cfg.device, nproc, verbose)
        return
    if not is_main_process():
        err.quiet = True  # under torchrun rank 0 alone prints progress, warnings and errors
    reporter = RichReporter()
    try:
        run_dir = run_training(cfg, reporter, given=given)
    finally:
        reporter.close()
    err.print(f"done: checkpoints in {run_dir}")


def _launch(given: dict, device: str, nproc: int, verbose: bool) -> None:
    """`--nproc N`: N copies of `tmv train` on the options given here (config file and flags, which
    each process resolves as this one would), started by torchrun's machinery."""
    import tempfile
    from pathlib import Path

    import torch
    import yaml

    from tinymvlm import distributed
    from tinymvlm.errors import TmvError

    if device in ("auto", "cuda") and torch.cuda.is_available() and nproc > torch.cuda.device_count():
        raise TmvError(f"--nproc {nproc} needs a GPU each, this machine has {torch.cuda.device_count()}")
    with tempfile.TemporaryDirectory(prefix="tmv-launch-") as tmp:
        config = Path(tmp) / "train.yaml"
        config.write_text(yaml.safe_dump(given, sort_keys=False), encoding="utf-8")
        distributed.launch(nproc, ["-m", "tinymvlm.cli", "train", "--config", str(config),
                                   *(["--verbose"] if verbose else [])], tmp, "training", verbose)
