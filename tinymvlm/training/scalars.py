"""TensorBoard scalars of a run (`--tensorboard`): the loss and learning rate of every step and the
validation recalls of every epoch, under RUN/tensorboard, for those who follow runs in TensorBoard.
Uses torch's own SummaryWriter, which needs the optional `tensorboard` package."""

from __future__ import annotations

from pathlib import Path

from tinymvlm.errors import TmvError

FOLDER = "tensorboard"


def require() -> None:
    """Fail before any work when the package is missing, with what to do."""
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        raise TmvError("--tensorboard needs the tensorboard package: pip install tensorboard "
                       "(or train without --tensorboard; RUN/curves.png is drawn either way)") from None


class Scalars:
    """One SummaryWriter on RUN/tensorboard; tags group as train/* and val/*."""

    def __init__(self, run_dir: Path) -> None:
        require()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / FOLDER))

    def step(self, step: int, loss: float, lr: float) -> None:
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/lr", lr, step)

    def epoch(self, record: dict) -> None:
        step = record["step"]
        self.writer.add_scalar("train/epoch_loss", record["train_loss"], step)
        self.writer.add_scalar("train/pairs_per_s", record["pairs_per_s"], step)
        for name, value in record.get("val", {}).items():
            self.writer.add_scalar(f"val/{name}", value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
