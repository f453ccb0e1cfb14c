"""`tmv score`: captions typed on the spot against images, agreeing with a search of indexed captions."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from tinymvlm.cli.main import cli

CAPTIONS = ["a plain red square", "a plain blue square", "a green thing", "a photo of a dog"]


def test_scores_equal_searching_indexed_captions_and_probabilities_sum_to_one(tmp_path, colour_folder, tiny_checkpoint):
    runner = CliRunner()
    caption_file = tmp_path / "caps.txt"
    caption_file.write_text("\n".join(CAPTIONS) + "\n", encoding="utf-8")
    folder = tmp_path / "idx"
    result = runner.invoke(cli, ["index", "--captions", str(caption_file), "--index", str(folder), "--checkpoint",
                                 str(tiny_checkpoint), "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    images = [str(colour_folder / "red.png"), str(colour_folder / "blue.png")]
    result = runner.invoke(cli, ["score", *images, "--captions", *CAPTIONS, "--checkpoint", str(tiny_checkpoint),
                                 "--precision", "fp32", "--json"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["image"] for r in records] == images
    for record in records:
        scored = record["captions"]
        assert sorted(c["caption"] for c in scored) == sorted(CAPTIONS)
        assert [c["similarity"] for c in scored] == sorted((c["similarity"] for c in scored), reverse=True)
        assert sum(c["probability"] for c in scored) == pytest.approx(1.0, abs=1e-6)
        searched = runner.invoke(cli, ["search", "--image", record["image"], "--texts", "--index", str(folder),
                                       "-k", str(len(CAPTIONS)), "--json"])
        assert searched.exit_code == 0, searched.output
        hits = {h["caption"]: h["score"] for h in map(json.loads, searched.stdout.splitlines())}
        assert hits == pytest.approx({c["caption"]: c["similarity"] for c in scored}, abs=1e-5)


def test_captions_from_flags_and_file_and_a_plain_table(tmp_path, colour_folder, tiny_checkpoint):
    caption_file = tmp_path / "labels.txt"
    caption_file.write_text("a dog\n\na cat\n", encoding="utf-8")
    red = str(colour_folder / "red.png")
    result = CliRunner().invoke(cli, ["score", red, "-c", "a car", "--captions-file", str(caption_file),
                                      "--checkpoint", str(tiny_checkpoint)])
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert sorted(r[1] for r in rows) == ["a car", "a cat", "a dog"] and {r[0] for r in rows} == {red}
    assert sum(float(r[3]) for r in rows) == pytest.approx(1.0, abs=2e-4)


@pytest.mark.parametrize("args, message", [
    (["missing.png", "--captions", "a cat"], "image missing.png does not exist"),
    (["{red}"], "no captions to score"),
    (["--captions", "a cat"], "no images to score"),
])
def test_bad_input_is_one_line(colour_folder, tiny_checkpoint, args, message):
    args = [a.replace("{red}", str(colour_folder / "red.png")) for a in args]
    result = CliRunner().invoke(cli, ["score", *args, "--checkpoint", str(tiny_checkpoint)])
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_probabilities_are_the_softmax_at_the_models_own_temperature(tmp_path, colour_folder, tiny_checkpoint):
    """A model saved with inverse temperature 20: every probability `tmv score` prints is
    exp(20 s) / sum exp(20 s') over the image's similarities s (numpy, float64), not a softmax at 1."""
    import numpy as np
    import torch

    from tinymvlm.models.checkpoint import load_checkpoint, save_checkpoint

    model, tokenizer, _ = load_checkpoint(tiny_checkpoint)
    with torch.no_grad():
        model.logit_scale.fill_(np.log(20.0))
    warm = tmp_path / "scale20.safetensors"
    save_checkpoint(warm, model, tokenizer)
    images = [str(colour_folder / "red.png"), str(colour_folder / "yellow.png")]
    result = CliRunner().invoke(cli, ["score", *images, "--captions", *CAPTIONS, "--checkpoint", str(warm),
                                      "--precision", "fp32", "--json"])
    assert result.exit_code == 0, result.output
    for record in map(json.loads, result.stdout.splitlines()):
        similarity = np.array([c["similarity"] for c in record["captions"]], dtype=np.float64)
        expected = np.exp(20 * similarity) / np.exp(20 * similarity).sum()
        assert [c["probability"] for c in record["captions"]] == pytest.approx(expected.tolist(), abs=2e-6)
        at_one = np.exp(similarity) / np.exp(similarity).sum()
        assert np.abs(expected - at_one).max() > 1e-3  # the test tells the temperatures apart
