"""The built-in model's people signal (tinymvlm/models/people.py): a face found by OpenCV in the crop
the image tower sees gives the label prior's "a photo of a person." row 0.6 of the mass.

Photos are scikit-image's: the astronaut portrait (her face, by looking, is centred near (225, 125) of
the 512 px image) and ones with no person (Chelsea the cat, coffee, greyscale coins whose profiles the
skin test must drop)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image (the dev extra) ships the photos")

FACE_CENTRE = (225, 125)  # the astronaut's face, read off the photo


@pytest.fixture(scope="module")
def builtin(builtin_checkpoint):
    from tinymvlm.models.checkpoint import load_checkpoint

    model, tokenizer, meta = load_checkpoint(builtin_checkpoint)
    return model, tokenizer, meta


def _crops(model, images: list[np.ndarray]) -> torch.Tensor:
    """The batch the image tower sees: the model's own evaluation transform."""
    from tinymvlm.data.transform import build_transforms

    transform = build_transforms(model.data_config, training=False)
    return torch.stack([transform(Image.fromarray(image).convert("RGB")) for image in images])


def _no_person() -> list[np.ndarray]:
    coins = skimage_data.coins()
    return [skimage_data.chelsea(), skimage_data.coffee(), np.stack([coins] * 3, -1)]


def test_a_face_is_found_where_the_photo_shows_it_and_nowhere_in_photos_without_people():
    from tinymvlm.models.people import faces

    boxes = faces(skimage_data.astronaut())
    x, y = FACE_CENTRE
    assert any(bx <= x <= bx + bw and by <= y <= by + bh for bx, by, bw, bh in boxes), boxes
    for image in _no_person():
        assert faces(image) == []


def test_the_person_mass_on_the_model_crop_is_0_6_for_a_face_and_0_otherwise_whatever_the_batch(builtin):
    from tinymvlm.models.people import person_mass

    model = builtin[0]
    pixels = _crops(model, [skimage_data.astronaut(), *_no_person()])
    mass = person_mass(pixels, model.data_config)
    assert mass.shape == (4, 1) and mass[:, 0].tolist() == pytest.approx([0.6, 0.0, 0.0, 0.0])
    assert person_mass(pixels[[2, 0]], model.data_config)[:, 0].tolist() == pytest.approx([0.0, 0.6])  # each image alone
    assert torch.equal(person_mass(pixels, model.data_config), mass)  # deterministic


def test_the_label_prior_gives_the_person_row_the_mass_and_the_classes_the_rest():
    from tinymvlm.models.label_prior import LabelPrior

    classifier = torch.nn.Linear(2, 3)
    with torch.no_grad():
        classifier.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
        classifier.bias.zero_()
    rows = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    prior = LabelPrior(classifier, rows, torch.tensor([5.0, -5.0]))
    features = torch.tensor([[0.0, 0.0], [np.log(2.0), 0.0]], dtype=torch.float32)
    got = prior(features, torch.tensor([[0.6], [0.0]]))
    # by hand: row 0 is uniform over the classes, (2/3, 2/3), mixed 0.4 / 0.6 with (5, -5);
    # row 1 has probabilities (1/2, 1/4, 1/4) and no face: (3/4, 1/2)
    assert torch.allclose(got, torch.tensor([[0.4 * 2 / 3 + 3.0, 0.4 * 2 / 3 - 3.0], [0.75, 0.5]]), atol=1e-6)


def test_the_astronaut_now_scores_as_a_person_smiling_above_a_red_car(builtin, tmp_path):
    """The issue's `tmv score astronaut.png --captions "a person smiling" "a red car"`, through the CLI."""
    from click.testing import CliRunner

    from tinymvlm.cli.main import cli

    photo = tmp_path / "astronaut.png"
    Image.fromarray(skimage_data.astronaut()).save(photo)
    result = CliRunner().invoke(cli, ["score", str(photo), "--captions", "a person smiling", "a red car",
                                      "--model", "builtin", "--json"])
    assert result.exit_code == 0, result.output
    best_first = [c["caption"] for c in json.loads(result.stdout)["captions"]]
    assert best_first == ["a person smiling", "a red car"]


def test_a_checkpoint_from_before_the_people_option_loads_as_one_without_it(builtin_checkpoint, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from tinymvlm.models.checkpoint import load_checkpoint

    with safe_open(str(builtin_checkpoint), framework="pt") as fh:
        meta = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys() if k != "label_prior.person_text"}
    config = json.loads(meta["model_config"])
    del config["people"]
    meta["model_config"] = json.dumps(config)
    old = tmp_path / "v2-like.safetensors"
    save_file(tensors, str(old), metadata=meta)
    model = load_checkpoint(old)[0]
    assert not model.reads_people and model.label_prior is not None
    features = torch.zeros(1, model.image_tower.num_features)
    assert model.project_image(features).shape == (1, model.embed_dim)


def test_faces_found_from_many_threads_at_once_are_the_faces_found_one_by_one(builtin):
    """OpenCV's cascade is not safe to share between threads (a shared one loses and invents faces):
    batches are searched in parallel, and `tmv serve` embeds queries from several threads."""
    import threading

    from tinymvlm.models.people import person_mass

    model = builtin[0]
    pixels = _crops(model, [skimage_data.astronaut(), *_no_person()] * 6)
    expected = [0.6, 0.0, 0.0, 0.0] * 6
    start, results = threading.Barrier(4), []

    def embed() -> None:
        start.wait(timeout=60)
        results.append(person_mass(pixels, model.data_config)[:, 0].tolist())

    threads = [threading.Thread(target=embed) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == 4
    for got in results:
        assert got == pytest.approx(expected)
