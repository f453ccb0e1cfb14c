"""The built-in model: search with no training, from the packaged offline towers.

The packaged EfficientNet-Lite0 already names what a photo shows (its 1000 ImageNet classes), and
MiniLM already places captions and class names in one space. The built-in model is that reading as an
ordinary TinyClip with a label prior (see `label_prior`) whose linear heads make it exact:

    image -> softmax(classifier(features) / T) @ E - c        text -> MiniLM(caption) - c

E holds MiniLM's embedding of "a photo of a {class name}." (the label prior's template) mixed with its
WordNet parents' and grandparents' (version 2: a Pekinese's row also says "toy dog" and "dog", so
everyday words find their photos; see `hypernyms` and docs/builtin-model.md); version 3 adds a
"a photo of a person." row that takes part of the mass when OpenCV finds a face (see `people`). T sharpens
or softens the class probabilities, and c, the mean class-name embedding, is subtracted from both sides
so that cosine similarity compares what is specific to a caption rather than the direction all
captions share. Because the probabilities sum to one, centring the image side is the text head's bias
too: the text head is the identity with bias -c, the image head is zero, and T is folded into the
frozen classifier. Measured on held-out Tux Paint, 30 real photos and Fashion-MNIST (see
benchmarks/bench_builtin.py): centring is the lever that counts; T 1.5 adds a little; averaging more
templates changes about nothing and multiplies the first use's build time (one MiniLM pass over the
1000 class names per template), so there is one.

The model is built once into the user cache as a self-describing checkpoint (so indexes record it
like any other) and rebuilt from the installed packages when missing, to the same fingerprint: the
class-name embeddings are rounded to half precision, so the last-bit differences that float sums in
another order (another thread count) could make round away (in all but freak cases).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tinymvlm.models.hypernyms import DEPTH_WEIGHTS
from tinymvlm.user_cache import model_cache

if TYPE_CHECKING:
    from tinymvlm.models.tinyclip import TinyClip

NAME = "builtin"
VERSION = 3  # 2: class rows mix in WordNet ancestors; 3: a found face reads as a person. The file name
# changes with it, so an index built with an older version says the model differs
TEMPERATURE = 1.5


def builtin_path() -> Path:
    return model_cache() / f"{NAME}-v{VERSION}.safetensors"


def is_builtin(path: str | Path) -> bool:
    return Path(path).resolve() == builtin_path().resolve()


def builtin_checkpoint() -> Path:
    """The built-in model's checkpoint, built first if the cache lacks it."""
    path = builtin_path()
    if not path.is_file():
        from tinymvlm.models.checkpoint import save_checkpoint
        from tinymvlm.models.people import SETTINGS as PEOPLE_SETTINGS

        model, tokenizer = build_builtin()
        save_checkpoint(path, model, tokenizer, {"model": NAME, "version": VERSION, "temperature": TEMPERATURE,
                                                 "hypernyms": {str(d): w for d, w in DEPTH_WEIGHTS.items()},
                                                 "people": PEOPLE_SETTINGS})
    return path


def build_builtin(temperature: float = TEMPERATURE, templates: tuple[str, ...] | None = None,
                  centred: bool = True, depth_weights: dict[int, float] = DEPTH_WEIGHTS,
                  people: bool = True) -> tuple["TinyClip", object]:
    """(model, tokenizer) of the built-in reading; the arguments are the levers benchmarks compare.
    (torch and the towers are imported here: naming the built-in model, as a text search does, needs
    neither.)"""
    import torch

    from tinymvlm.models.config import ModelConfig
    from tinymvlm.models.factory import PRIOR_TEMPLATE, build_label_prior
    from tinymvlm.models.tinyclip import TinyClip, data_config_for
    from tinymvlm.models.towers import PACKAGED_IMAGE, PACKAGED_TEXT, load_image_tower, load_text_tower

    config = ModelConfig(image_model=PACKAGED_IMAGE, text_model=PACKAGED_TEXT, head="linear", embed_dim=384,
                         label_prior=True, people=people)
    with torch.no_grad():
        image_tower, arch, classifier = load_image_tower(config.image_model, True)
        text_tower, tokenizer = load_text_tower(config.text_model, True)
        model = TinyClip(config, image_tower, text_tower, arch, data_config_for(image_tower, None)).eval()
        model.label_prior = build_label_prior(model, tokenizer, classifier, templates or (PRIOR_TEMPLATE,),
                                              depth_weights)
        for rows in (model.label_prior.label_text, model.label_prior.person_text):
            if rows is not None:
                rows.copy_(rows.half().float())
    return read_as(model, temperature, centred), tokenizer


def read_as(model: "TinyClip", temperature: float, centred: bool = True) -> "TinyClip":
    """Make a model with an unsharpened label prior (temperature 1) the reading at `temperature`,
    centred or not."""
    import torch

    from tinymvlm.models.factory import start_as_reading

    with torch.no_grad():
        model.label_prior.classifier.weight.div_(temperature)
        model.label_prior.classifier.bias.div_(temperature)
        start_as_reading(model)
        if not centred:
            model.text_proj.bias.zero_()
    return model
