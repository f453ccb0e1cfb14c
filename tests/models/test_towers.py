"""The packaged offline towers load, map correctly and behave like the real pretrained models."""

from __future__ import annotations

import pytest
import torch

from tinymvlm import hub
from tinymvlm.errors import TmvError
from tinymvlm.models.towers import (
    load_image_tower,
    load_text_tower,
    map_efficientnet_lite0,
    packaged_efficientnet_lite0,
    packaged_image_weights,
)


def test_efficientnet_mapping_covers_every_tensor_with_matching_shapes():
    import timm

    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    source = torch.load(packaged_image_weights(), map_location="cpu", weights_only=True)
    mapped = map_efficientnet_lite0(source, target)
    assert set(mapped) == set(target)
    assert all(mapped[k].shape == target[k].shape for k in target)


def test_efficientnet_mapping_rejects_a_wrong_shape():
    import timm

    target = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()
    source = dict(torch.load(packaged_image_weights(), map_location="cpu", weights_only=True))
    source["_conv_stem.weight"] = torch.zeros(16, 3, 3, 3)
    with pytest.raises(TmvError, match="shape"):
        map_efficientnet_lite0(source, target)


def test_packaged_efficientnet_classifies_chelsea_as_a_cat():
    from PIL import Image
    from skimage import data
    from timm.data import create_transform, resolve_data_config

    model = packaged_efficientnet_lite0(num_classes=1000).eval()
    transform = create_transform(**resolve_data_config({}, model=model))
    with torch.no_grad():
        probs = model(transform(Image.fromarray(data.chelsea()))[None]).softmax(-1)[0]
    cats = {281, 282, 283, 284, 285, 286, 287}  # tabby, tiger cat, Persian, Siamese, Egyptian cat, cougar, lynx
    assert int(probs.argmax()) in cats
    assert float(probs[list(cats)].sum()) > 0.8


def test_packaged_minilm_gives_meaningful_sentence_similarity():
    encoder, tokenizer = load_text_tower("minilm-l6")
    batch = tokenizer(["a cat sits on the sofa", "a kitten is lying on a couch", "stock prices fell sharply"],
                      padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = encoder(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1)
    emb = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    sims = emb @ emb.t()
    assert sims[0, 1] > 0.5 > sims[0, 2]


def test_unknown_image_model_is_a_clear_error():
    with pytest.raises(TmvError, match="unknown image model 'no_such_net'"):
        load_image_tower("no_such_net")


def test_hub_model_offline_fails_fast_naming_the_packaged_towers(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    hub.reachable.cache_clear()
    with pytest.raises(TmvError, match="efficientnet_lite0"):
        load_image_tower("resnet18")
    with pytest.raises(TmvError, match="minilm-l6"):
        load_text_tower("someone/some-text-model")


def test_default_image_tower_falls_back_to_the_packaged_one_offline(monkeypatch, caplog):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    hub.reachable.cache_clear()
    model, arch, _ = load_image_tower(None)
    assert arch == "tf_efficientnet_lite0"
    assert "packaged efficientnet_lite0" in caplog.text


def test_a_hub_that_does_not_answer_within_3_s_is_unreachable_and_the_default_tower_falls_back(monkeypatch, caplog):
    """Not offline by setting: the probe to HF_ENDPOINT's host times out (3 s asked), so the default
    image tower is the packaged one, a hub-only tower is a one-line error, and the hub is probed once."""

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example.test")
    asked = []

    def no_answer(address, timeout):
        asked.append((address, timeout))
        raise TimeoutError("timed out")

    monkeypatch.setattr(hub.socket, "create_connection", no_answer)
    hub.reachable.cache_clear()
    try:
        model, arch, _ = load_image_tower(None)
        assert arch == "tf_efficientnet_lite0" and "hub is unreachable" in caplog.text
        with pytest.raises(TmvError, match="cannot be reached"):
            load_image_tower("resnet18")
        assert asked == [(("hub.example.test", 443), 3)]
    finally:
        hub.reachable.cache_clear()
