"""The built-in model against its documented reading (tinymvlm/models/builtin.py, version 3), rebuilt
here from the packaged pieces and never from the saved model:

    image -> normalize((1 - m) softmax(classifier(features) / 1.5) @ E + m P - c)
    text  -> normalize(MiniLM(caption) - c)

E: for each ImageNet class (the first of timm's WordNet synonyms), MiniLM's mean-pooled embedding of
"a photo of a {name}.", mixed with its WordNet parents' (weight 0.7 each) and grandparents' (0.2 each)
embeddings and divided by the weights' sum, rounded to half precision; c: E's mean; 1.5: the
temperature; P: MiniLM's "a photo of a person.", rounded alike; m: 0.6 when a face was found in the
image, else 0 (the face detector itself: test_people). The ancestors are read here from the shipped WordNet table's text (pinned by
test_builtin_hierarchy). When the built-in model's version changes what it reads, this file changes with it.
"""

from __future__ import annotations

import pytest
import torch

TEMPERATURE = 1.5
TEMPLATE = "a photo of a {}."
PARENT, GRANDPARENT = 0.7, 0.2
FACE_MASS = 0.6


def _shipped_ancestors() -> dict[str, tuple[list[str], list[str]]]:
    """{synset id: (parents, grandparents)} parsed from the table's text."""
    from importlib.resources import files

    table = {}
    for line in files("tinymvlm.models").joinpath("imagenet_hypernyms.tsv").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            synset, _name, parents, grandparents = (line.split("\t") + ["", ""])[:4]
            table[synset] = ([n for n in parents.split(";") if n], [n for n in grandparents.split(";") if n])
    return table


@pytest.fixture(scope="module")
def reference():
    """(classifier weight, bias, E, mean-pooling MiniLM encoder) built from the installed packages."""
    from timm.data import ImageNetInfo
    from transformers import AutoModel, AutoTokenizer

    from tinymvlm.models.towers import packaged_efficientnet_lite0, packaged_text_path

    tower = packaged_efficientnet_lite0(num_classes=1000)
    weight, bias = tower.classifier.weight.detach().clone(), tower.classifier.bias.detach().clone()
    info = ImageNetInfo("imagenet-1k")
    names = [info.index_to_description(i).split(",")[0] for i in range(1000)]
    tokenizer = AutoTokenizer.from_pretrained(packaged_text_path())
    minilm = AutoModel.from_pretrained(packaged_text_path()).eval()

    @torch.no_grad()
    def encode(texts: list[str]) -> torch.Tensor:
        rows = []
        for start in range(0, len(texts), 100):
            batch = tokenizer(texts[start:start + 100], padding=True, return_tensors="pt")
            hidden = minilm(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            rows.append((hidden * mask).sum(1) / mask.sum(1))
        return torch.cat(rows)

    ancestors = _shipped_ancestors()
    mixes = []
    for i, name in enumerate(names):
        parents, grandparents = ancestors[info.index_to_label_name(i)]
        mixes.append([(name, 1.0)] + [(n, PARENT) for n in parents] + [(n, GRANDPARENT) for n in grandparents])
    words = sorted({text for mix in mixes for text, _ in mix})
    embedded = dict(zip(words, encode([TEMPLATE.format(w) for w in words])))
    rows = [sum(w * embedded[text] for text, w in mix) / sum(w for _, w in mix) for mix in mixes]
    classes = torch.stack(rows).half().float()
    person = encode([TEMPLATE.format("person")])[0].half().float()
    return weight, bias, classes, person, encode


def _image_reading(features, mass, weight, bias, classes, person, temperature):
    probabilities = ((features @ weight.T + bias) / temperature).softmax(-1)
    reading = (1 - mass) * (probabilities @ classes) + mass * person
    return torch.nn.functional.normalize(reading - classes.mean(0), dim=-1)


def test_the_builtin_model_is_the_documented_reading_at_temperature_1_5(builtin_checkpoint, reference):
    from tinymvlm.models.checkpoint import load_checkpoint
    from tinymvlm.models.tokenizer import tokenize

    weight, bias, classes, person, encode = reference
    model, tokenizer, meta = load_checkpoint(builtin_checkpoint)
    features = 2 * torch.rand(4, weight.shape[1], generator=torch.Generator().manual_seed(0))
    mass = torch.tensor([[FACE_MASS], [0.0], [FACE_MASS], [0.0]])
    with torch.no_grad():
        got = model.project_image(torch.cat([features, mass], 1))  # the found-face column comes last
    expected = _image_reading(features, mass, weight, bias, classes, person, TEMPERATURE)
    assert torch.allclose(got, expected, atol=2e-4)
    for other in (1.0, 2.0):  # the comparison tells temperatures apart
        assert not torch.allclose(got, _image_reading(features, mass, weight, bias, classes, person, other), atol=1e-2)
    faceless = _image_reading(features, torch.zeros_like(mass), weight, bias, classes, person, TEMPERATURE)
    assert torch.allclose(got[1::2], faceless[1::2], atol=2e-4) and not torch.allclose(got[::2], faceless[::2], atol=1e-2)
    probabilities = ((features @ weight.T + bias) / TEMPERATURE).softmax(-1)
    uncentred = torch.nn.functional.normalize((1 - mass) * (probabilities @ classes) + mass * person, dim=-1)
    assert not torch.allclose(got, uncentred, atol=1e-2)
    captions = ["a photo of a dog", "a red bicycle leaning on a wall", "two cats"]
    batch = tokenize(tokenizer, captions, model.config.context_length)
    with torch.no_grad():
        text = model.encode_text(batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(text, torch.nn.functional.normalize(encode(captions) - classes.mean(0), dim=-1), atol=2e-4)
    assert meta["info"]["temperature"] == TEMPERATURE  # what the checkpoint says of itself, last
