"""`tmv train`: contrastive training with a rich progress bar on stderr."""

from __future__ import annotations

import click

from .console import err, friendly_errors, setup_logging, warn_skipped


class RichReporter:
    """Draws training progress (loss, lr, pairs/s, ETA) and epoch summaries on stderr."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                 TimeRemainingColumn(), console=err, transient=False)
        self.task = None

    def notice(self, message: str) -> None:
        from rich.markup import escape

        err.print(escape(message))

    def skipped(self, pairs) -> None:
        warn_skipped(pairs.name, pairs.skipped)

    def start(self, total_steps: int, start_step: int, info: dict) -> None:
        processes = f" in each of {info['processes']} processes" if info.get("processes", 1) > 1 else ""
        prior = f", label prior over {info['label_prior']} tower classes" if info.get("label_prior") else ""
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

    def epoch_end(self, record: dict) -> None:
        line = f"epoch {record['epoch']}: loss {record['train_loss']:.4f}, {record['pairs_per_s']:.1f} pairs/s"
        if "val" in record:
            v = record["val"]
            line += (f"; val t2i R@1/5/10 {v['t2i_R@1']:.1f}/{v['t2i_R@5']:.1f}/{v['t2i_R@10']:.1f}"
                     f", i2t R@1/5/10 {v['i2t_R@1']:.1f}/{v['i2t_R@5']:.1f}/{v['i2t_R@10']:.1f}")
        self.progress.console.print(line, soft_wrap=True)

    def close(self) -> None:
        if self.task is not None:
            self.progress.stop()


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML file of options; flags override it.")
@click.option("--data", help="Pairs file (TSV/CSV/JSONL), image folder with .txt captions, or dataset (hub name or local). Default: Flickr30k train.")
@click.option("--val-data", help="Separate validation data (same formats as --data).")
@click.option("--val-fraction", type=float, default=0.1, show_default=True, help="Share of --data images held out for validation (0 disables).")
@click.option("--image-root", help="Folder that relative image paths in a pairs file start from (default: the file's folder).")
@click.option("--image-column", help="Image column of a pairs file or dataset.")
@click.option("--caption-column", help="Caption column of a pairs file or dataset.")
@click.option("--split", help="Dataset split to train on (default train).")
@click.option("--val-split", help="Dataset split of --val-data.")
@click.option("--image-model", help="timm model name, folder, or 'efficientnet_lite0' (packaged). Default vit_tiny_patch16_224, falling back to efficientnet_lite0 offline.")
@click.option("--image-weights", help="Weights file (.safetensors/.pth) for --image-model.")
@click.option("--text-model", default="sentence-transformers/all-MiniLM-L6-v2", show_default=True, help="Hugging Face encoder name or folder, or 'minilm-l6' (packaged).")
@click.option("--pretrained/--no-pretrained", default=True, show_default=True, help="Start from pretrained towers, or train from scratch.")
@click.option("--embed-dim", type=int, default=256, show_default=True)
@click.option("--head", type=click.Choice(["linear", "mlp"]), default="mlp", show_default=True, help="Projection head type.")
@click.option("--image-size", type=int, help="Train and embed at this square size instead of the tower's own.")
@click.option("--context-length", type=int, default=77, show_default=True, help="Caption token limit (longer captions are truncated).")
@click.option("--init-logit-scale", type=float, default=7.0, show_default=True,
              help="Starting inverse temperature (learned from there). CLIP's 14.3 suits huge data; small data retrieves better from 5-10.")
@click.option("--label-prior/--no-label-prior", default=True, show_default=True,
              help="Add the image tower's own class predictions, read through the text tower, to image embeddings "
                   "(pretrained towers with a classifier: the packaged one, timm ImageNet models).")
@click.option("--pad-to-max", is_flag=True, default=False, help="Pad every caption to --context-length instead of the batch's longest.")
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Learning rate of the heads and temperature.")
@click.option("--tower-lr", type=float, default=1e-4, show_default=True, help="Learning rate of the unlocked tower weights.")
@click.option("--weight-decay", type=float, default=0.1, show_default=True, help="AdamW decay (never on biases, norms, temperature).")
@click.option("--warmup-steps", type=int, default=50, show_default=True)
@click.option("--min-lr-ratio", type=float, default=0.0, show_default=True, help="Cosine decay floor, as a share of the peak rate.")
@click.option("--grad-clip", type=float, default=1.0, show_default=True, help="Clip the gradient norm (0 disables).")
@click.option("--accum-steps", type=int, default=1, show_default=True, help="Micro-batches per optimiser step.")
@click.option("--local-loss/--global-loss", default=False, show_default=True,
              help="With several processes: each computes the loss of its own pairs against all gathered ones "
                   "(cheaper than the whole global batch's; the same gradients).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
              help="bf16 autocasts on CPU and CUDA; auto: bf16 where the hardware runs it natively (CUDA, AVX512-BF16/AMX CPUs).")
@click.option("--lock-image/--no-lock-image", default=True, show_default=True, help="Freeze the image tower (LiT; the small-data default).")
@click.option("--lock-image-unlocked", type=int, default=0, show_default=True, help="Last image-tower groups left trainable when locked.")
@click.option("--lock-text/--no-lock-text", default=False, show_default=True, help="Freeze the text tower.")
@click.option("--lock-text-unlocked", type=int, default=0, show_default=True, help="Last text layers left trainable when locked.")
@click.option("--cache-image-features/--no-cache-image-features", default=True, show_default=True,
              help="With a fully locked image tower, compute its features once per augmented view.")
@click.option("--image-views", type=int, default=8, show_default=True, help="Views cached per image: the plain evaluation view plus augmented ones.")
@click.option("--train-image-size", type=int,
              help="Train on random crops of this square size (convolutional towers), still evaluating and "
                   "embedding at the tower's own size: fewer pixels, faster steps, less memory.")
@click.option("--channels-last/--no-channels-last", default=True, show_default=True,
              help="Feed training images to the image tower channels-last (much faster convolutions on CPU; embedding always does).")
@click.option("--grad-checkpointing/--no-grad-checkpointing", default=False, show_default=True,
              help="Recompute the image tower's activations in the backward pass: much less memory, slower steps.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=int, default=2, show_default=True, help="DataLoader worker processes decoding images.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1 ...")
@click.option("--nproc", type=int,
              help="Train in N processes on this machine (one per GPU; gloo on CPU), started as torchrun would.")
@click.option("--out-dir", help="Run folder (default runs/<date-time>).")
@click.option("--save-every", type=int, default=1, show_default=True, help="Write epoch_NNN.safetensors every N epochs.")
@click.option("--resume", help="'latest' (needs --out-dir) or a latest.safetensors path: continue where that run stopped.")
@click.option("-v", "--verbose", is_flag=True, help="Show informational log messages.")
@click.pass_context
@friendly_errors
def train(ctx: click.Context, config_path: str | None, verbose: bool, nproc: int | None, **params) -> None:
    """Train a contrastive image-text model and write checkpoints to a run folder."""
    setup_logging(verbose)
    from pathlib import Path

    from tinymvlm.distributed import is_main_process
    from tinymvlm.errors import TmvError
    from tinymvlm.train import CONFIG, train as run_training

    from .config_file import build_config, read_yaml

    base: dict = {}
    resume = params.get("resume")
    if resume:
        run = Path(params["out_dir"]) if resume == "latest" and params.get("out_dir") else Path(resume).parent
        if resume == "latest" and not params.get("out_dir"):
            raise TmvError("--resume latest needs --out-dir RUN_FOLDER (or give the path of a latest.safetensors)")
        if (run / CONFIG).is_file():
            base.update(read_yaml(run / CONFIG))
            base.pop("resume", None)
            base["out_dir"] = str(run)
    if config_path:
        base.update(read_yaml(config_path))
    cfg = build_config(ctx, params, base)
    if nproc is not None:
        _launch(cfg, nproc, verbose)
        return
    if not is_main_process():
        err.quiet = True  # under torchrun rank 0 alone prints progress, warnings and errors
    reporter = RichReporter()
    try:
        run_dir = run_training(cfg, reporter)
    finally:
        reporter.close()
    err.print(f"done: checkpoints in {run_dir}")


def _launch(cfg, nproc: int, verbose: bool) -> None:
    """`--nproc N`: N copies of `tmv train` on the options resolved here (config files, flags,
    the resumed run's config), started by torchrun's machinery."""
    import logging
    import os
    import sys
    import tempfile
    from pathlib import Path

    import torch
    import yaml

    from tinymvlm import distributed
    from tinymvlm.errors import TmvError

    if nproc < 1:
        raise TmvError(f"--nproc must be 1 or more, not {nproc}")
    if "WORLD_SIZE" in os.environ:
        raise TmvError("--nproc starts its own processes; under torchrun leave it out")
    if cfg.device in ("auto", "cuda") and torch.cuda.is_available() and nproc > torch.cuda.device_count():
        raise TmvError(f"--nproc {nproc} needs a GPU each, this machine has {torch.cuda.device_count()}")
    if not verbose:  # the launcher's own log lines; the processes report themselves
        logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="tmv-launch-") as tmp:
        config = Path(tmp) / "train.yaml"
        config.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")
        failed = distributed.launch(nproc, ["-m", "tinymvlm.cli", "train", "--config", str(config),
                                            *(["--verbose"] if verbose else [])], tmp)
    if failed.get(0) == 2:
        sys.exit(2)  # rank 0 has printed its one-line error
    if failed:
        rank = min(failed)
        raise TmvError(f"training process {rank} of {nproc} failed with exit status {failed[rank]}; see its output above")
