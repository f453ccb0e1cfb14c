"""The label prior: the image tower's class predictions, read through the text tower."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner
from tinymvlm.cli.main import cli

from tinymvlm.models.checkpoint import load_checkpoint, save_checkpoint
from tinymvlm.models.config import ModelConfig
from tinymvlm.models.factory import create_model
from tinymvlm.models.towers import load_image_tower, packaged_efficientnet_lite0


@pytest.fixture(scope="module")
def packaged_model():
    """The packaged towers, as `tmv train --image-model efficientnet_lite0 --text-model minilm-l6` builds them."""
    model, tokenizer = create_model(ModelConfig(image_model="efficientnet_lite0", text_model="minilm-l6"))
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def tiny_prior_config(tiny_text_model):
    """The packaged image tower (with its classifier) at 32 px and the tiny text tower: fast."""
    return ModelConfig(image_model="efficientnet_lite0", text_model=str(tiny_text_model), embed_dim=16, image_size=32,
                       context_length=16)


def test_the_packaged_tower_comes_with_its_imagenet_classifier_and_names():
    tower, arch, classifier = load_image_tower("efficientnet_lite0")
    assert classifier is not None and len(classifier.names) == classifier.layer.out_features == 1000
    assert classifier.names[273] == "dingo" and classifier.names[281] == "tabby"
    reference = packaged_efficientnet_lite0(num_classes=1000).eval()
    pixels = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = tower.eval()(pixels)
        assert features.shape == (2, 1280)  # features only: the classifier is taken off
        assert torch.allclose(classifier.layer(features), reference(pixels), atol=1e-4)


def test_towers_without_a_trained_classifier_have_no_prior(tiny_model_config, tiny_prior_config):
    assert load_image_tower("efficientnet_lite0", pretrained=False)[2] is None
    assert create_model(tiny_model_config)[0].label_prior is None  # random test tower
    assert create_model(replace(tiny_prior_config, label_prior=False))[0].label_prior is None


def test_the_prior_reads_a_cat_photo_as_cat_text(packaged_model):
    """Chelsea the cat, through the frozen classifier and the class-name embeddings, lands in the text
    tower's space next to a caption about a cat and far from one about a truck."""
    from PIL import Image
    from skimage import data

    from tinymvlm.data.transform import build_transforms

    model, tokenizer = packaged_model
    pixels = build_transforms(model.data_config, training=False)(Image.fromarray(data.chelsea()))[None]
    batch = tokenizer(["a cat lying down.", "a red truck on a road."], padding=True, return_tensors="pt")
    with torch.no_grad():
        prior = model.label_prior(model.image_tower(pixels))
        texts = model.text_features(batch["input_ids"], batch["attention_mask"])
    cat, truck = torch.nn.functional.cosine_similarity(prior, texts).tolist()
    assert cat > 0.5 > truck


def test_the_prior_is_frozen_and_survives_a_checkpoint(tiny_prior_config, tmp_path):
    model, tokenizer = create_model(tiny_prior_config)
    prior = model.label_prior
    assert prior.classes == 1000 and prior.label_text.shape == (1000, 32)
    assert not any(p.requires_grad for p in prior.parameters())
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, model, tokenizer)
    loaded, _, _ = load_checkpoint(path)
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model.eval().encode_image(pixels), loaded.encode_image(pixels))
        without = model.image_proj(model.image_tower(pixels))
        assert not torch.allclose(model.encode_image(pixels), torch.nn.functional.normalize(without, dim=-1))


def test_training_keeps_the_prior_fixed_and_says_it_is_used(tiny_prior_config, colour_folder, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", "--data", str(colour_folder), "--val-fraction", "0", "--epochs", "1",
                                      "--batch-size", "4", "--image-model", "efficientnet_lite0", "--image-size", "32",
                                      "--text-model", tiny_prior_config.text_model, "--embed-dim", "16", "--context-length", "16",
                                      "--workers", "0", "--out-dir", str(out)])
    assert result.exit_code == 0, result.output
    assert "label prior over 1000 tower classes and found faces" in result.output
    trained, _, _ = load_checkpoint(out / "latest.safetensors")
    fresh, _ = create_model(tiny_prior_config)
    assert torch.equal(trained.label_prior.label_text, fresh.label_prior.label_text)
    assert torch.equal(trained.label_prior.classifier.weight, fresh.label_prior.classifier.weight)


@pytest.mark.parametrize("damage", ["flattened", "classifier-missing"])
def test_a_damaged_prior_in_a_checkpoint_is_a_one_line_error(tiny_prior_config, tmp_path, damage):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from tinymvlm.errors import TmvError

    model, tokenizer = create_model(tiny_prior_config)
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, model, tokenizer)
    with safe_open(str(path), framework="pt") as fh:
        metadata = fh.metadata()
    tensors = load_file(path)
    if damage == "flattened":
        tensors["label_prior.label_text"] = tensors["label_prior.label_text"].flatten()
    else:
        del tensors["label_prior.classifier.weight"]
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(TmvError, match="does not match the model it describes"):
        load_checkpoint(path)
