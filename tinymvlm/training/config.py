"""What the user chooses for a training run, saved as the run's config.yaml. Each field is declared
once, with its default and help, and `tmv train`'s flags and the YAML keys come from it (see
`tinymvlm.options`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tinymvlm.errors import TmvError
from tinymvlm.models.config import ModelConfig
from tinymvlm.options import check_choices, option, to_flat


@dataclass
class TrainConfig:
    """Everything a run needs; `tmv train` flags and YAML keys have the same names."""

    data: str | None = option(
        None, "Pairs file (TSV/CSV/JSONL), image folder with .txt captions, or dataset (hub name or local). "
              "Default: Flickr30k train.")
    val_data: str | None = option(None, "Separate validation data (same formats as --data).")
    val_fraction: float = option(0.1, "Share of --data images held out for validation (0 disables).")
    samples: int | None = option(
        None, "Train on a seeded random sample of this many images of --data (with all their captions); "
              "the validation share is held out of the sample.")
    image_root: str | None = option(
        None, "Folder that relative image paths in a pairs file start from (default: the file's folder).")
    image_column: str | None = option(None, "Image column of a pairs file or dataset.")
    caption_column: str | None = option(None, "Caption column of a pairs file or dataset.")
    split: str | None = option(None, "Dataset split to train on (default train).")
    val_split: str | None = option(None, "Dataset split of --val-data.")
    base_model: str | None = option(
        None, "Start from this model instead of new heads on the towers above: hf:ORG/NAME or a Hugging Face "
              "CLIP/SigLIP folder, open_clip:ARCH/TAG|FILE, a tmv checkpoint or run folder (its towers, heads "
              "and temperature; the tower options are then its own).", flag="--model")
    model: ModelConfig = field(default_factory=ModelConfig)
    pad_to_max: bool = option(False, "Pad every caption to --context-length instead of the batch's longest.")
    epochs: int = option(10, "Passes over the training images.")
    batch_size: int = option(32, "Pairs per batch (per process).")
    lr: float = option(1e-3, "Learning rate of the heads and temperature.")
    tower_lr: float = option(1e-4, "Learning rate of the unlocked tower weights.")
    weight_decay: float = option(0.1, "AdamW decay (never on biases, norms, temperature).")
    warmup_steps: int = option(50, "Linear warmup steps before the cosine decay.")
    min_lr_ratio: float = option(0.0, "Cosine decay floor, as a share of the peak rate.")
    grad_clip: float = option(1.0, "Clip the gradient norm (0 disables).")
    accum_steps: int = option(1, "Micro-batches per optimiser step.")
    local_loss: bool = option(
        False, "With several processes: each computes the loss of its own pairs against all gathered ones "
               "(cheaper than the whole global batch's; the same gradients).", off="--global-loss")
    precision: str = option(
        "auto", "bf16 autocasts on CPU and CUDA; auto: bf16 where the hardware runs it natively (CUDA, "
                "AVX512-BF16/AMX CPUs).", choices=("auto", "fp32", "bf16"))
    lock_image: bool = option(True, "Freeze the image tower (LiT; the small-data default).")
    lock_image_unlocked: int = option(0, "Last image-tower groups left trainable when locked.")
    lock_text: bool = option(False, "Freeze the text tower.")
    lock_text_unlocked: int = option(0, "Last text layers left trainable when locked.")
    cache_image_features: bool = option(True, "With a fully locked image tower, compute its features once per augmented view.")
    image_views: int = option(8, "Views cached per image: the plain evaluation view plus augmented ones.")
    image_cache: bool = option(
        False, "With the image tower training: decode each training image once into a pre-resized uint8 cache in "
               "the run folder (shorter side twice the training crop size), so later epochs and resumes decode "
               "no full-size file; the same crops, resampled from the smaller copy.")
    train_image_size: int | None = option(
        None, "Train on random crops of this square size (convolutional towers), still evaluating and embedding "
              "at the tower's own size: fewer pixels, faster steps, less memory.")
    channels_last: bool = option(
        True, "Feed training images to the image tower channels-last (much faster convolutions on CPU; "
              "embedding always does).")
    grad_checkpointing: bool = option(
        False, "Recompute the image tower's activations in the backward pass: much less memory, slower steps.")
    seed: int = option(0, "Seed of every random choice (order, captions, augmentation, dropout, --samples).")
    workers: int = option(2, "DataLoader worker processes decoding images.")
    device: str = option("auto", "auto, cpu, cuda, cuda:1 ...")
    out_dir: str | None = option(None, "Run folder (default runs/<date-time>).")
    save_every: int = option(1, "Write epoch_NNN.safetensors every N epochs.")
    wise_alpha: float = option(
        0.75, "WiSE-FT: validate and save start + ALPHA x (trained - start), a mix of the fine-tuned weights and "
             "those the run started from, which keeps what the start knew (1: the fine-tuned weights as they are; 0.75 "
             "measured best on Tux Paint against real photos, see benchmarks/bench_builtin.py).")
    tensorboard: bool = option(
        False, "Also write TensorBoard scalars (loss, lr, validation recall) to RUN/tensorboard; needs the "
               "tensorboard package.")
    resume: str | None = option(
        None, "'latest' (needs --out-dir) or a latest.safetensors path: continue where that run stopped, "
              "with that run's options.")

    def __post_init__(self) -> None:
        check_choices(self)
        if not 0 <= self.wise_alpha <= 1:
            raise TmvError(f"wise_alpha must be in [0, 1], not {self.wise_alpha}")
        if not 0 <= self.val_fraction < 1:
            raise TmvError(f"val_fraction must be in [0, 1), not {self.val_fraction}")
        for name in ("epochs", "batch_size", "accum_steps", "save_every"):
            if getattr(self, name) <= 0:
                raise TmvError(f"{name} must be positive, not {getattr(self, name)}")
        for name in ("train_image_size", "samples"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise TmvError(f"{name} must be positive, not {getattr(self, name)}")

    def to_dict(self) -> dict:
        """Flat, as config.yaml and --config files hold it."""
        return to_flat(self)
