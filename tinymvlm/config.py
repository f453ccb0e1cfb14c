"""What the user chooses: the model (saved in every checkpoint so it rebuilds the model) and the
training run (saved as the run's config.yaml). Each field is declared once, with its default and
help, and `tmv train`'s flags and the YAML keys come from it (see `options`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .errors import TmvError
from .options import check_choices, option, to_flat
from .towers import DEFAULT_IMAGE_MODEL, DEFAULT_TEXT_MODEL, PACKAGED_IMAGE, PACKAGED_TEXT


@dataclass
class ModelConfig:
    """The towers and the shared space. `image_model` None means the default ViT-Tiny (see towers).

    `init_logit_scale` is the starting inverse temperature of the contrastive loss. CLIP starts at
    1/0.07 (14.3) for hundreds of millions of pairs; on small data a softer start keeps the heads from
    over-sharpening on their few pairs and retrieves better (7 measured best of 5-14.3 on Tux Paint;
    see benchmarks/bench_recipe.py).

    `label_prior` adds the image tower's own class predictions, read through the text tower, to every
    image embedding (see `prior`); it needs a pretrained tower that comes with its classifier and
    class names (the packaged EfficientNet-Lite0, or a timm ImageNet model from the hub); with any
    other tower the model has none, and `tmv train` says which when it starts.
    """

    image_model: str | None = option(
        None, f"timm model name, folder, or '{PACKAGED_IMAGE}' (packaged). Default {DEFAULT_IMAGE_MODEL}, "
              f"falling back to {PACKAGED_IMAGE} offline.")
    text_model: str = option(DEFAULT_TEXT_MODEL, f"Hugging Face encoder name or folder, or '{PACKAGED_TEXT}' (packaged).")
    image_weights: str | None = option(None, "Weights file (.safetensors/.pth) for --image-model.")
    pretrained: bool = option(True, "Start from pretrained towers, or train from scratch.")
    embed_dim: int = option(384, "Size of the shared embedding space (384: MiniLM's width, see --head).")
    head: str = option(
        "linear", "Projection head type. Linear heads over a label prior at the text tower's width start as the "
                  "built-in model's reading, and training learns a correction: what the towers knew is kept.",
        choices=("linear", "mlp"))
    image_size: int | None = option(None, "Train and embed at this square size instead of the tower's own.")
    context_length: int = option(77, "Caption token limit (longer captions are truncated).")
    init_logit_scale: float = option(
        7.0, "Starting inverse temperature (learned from there). CLIP's 14.3 suits huge data; small data "
             "retrieves better from 5-10.")
    label_prior: bool = option(
        True, "Add the image tower's own class predictions, read through the text tower, to image embeddings "
              "(pretrained towers with a classifier: the packaged one, timm ImageNet models).")

    def __post_init__(self) -> None:
        check_choices(self)
        if self.embed_dim <= 0 or self.context_length <= 0:
            raise TmvError("embed_dim and context_length must be positive")
        if not 1 <= self.init_logit_scale <= 100:
            raise TmvError(f"init_logit_scale must be between 1 and 100, not {self.init_logit_scale}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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
