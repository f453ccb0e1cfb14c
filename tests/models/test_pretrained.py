"""Pretrained CLIPs as tmv models (`--model`): Hugging Face CLIP and SigLIP folders and open_clip
checkpoints, made tiny and random by the tests (see pretrained_models), checked against each
source's own functions and used through every command."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from helpers.pretrained_models import OPEN_CLIP_ARCH, save_hf_clip, save_hf_siglip, save_open_clip
from tinymvlm.cli.main import cli

from tinymvlm import hub

open_clip = pytest.importorskip("open_clip")


@pytest.fixture(autouse=True)
def model_cache(tmp_path, monkeypatch):
    """Each test imports into its own cache folder ($XDG_CACHE_HOME), offline."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    hub.reachable.cache_clear()
    yield tmp_path / "cache" / "tinymvlm" / "models"
    hub.reachable.cache_clear()


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, str]:
    """{kind: --model reference} of one tiny model per ecosystem."""
    root = tmp_path_factory.mktemp("sources")
    return {"clip": str(save_hf_clip(root / "clip")), "siglip": str(save_hf_siglip(root / "siglip")),
            "open_clip": f"open_clip:{OPEN_CLIP_ARCH}/{save_open_clip(root)}"}


def _photo() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.chelsea())


def _tensor(out) -> torch.Tensor:
    """get_*_features returns a tensor (transformers 4) or an output whose pooler_output is it (5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


# ------------------------------------------------------------------------------------------ parity


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_hf_model_embeds_as_its_own_feature_functions_and_processor(sources, kind):
    """encode_image / encode_text equal the source's get_image_features / get_text_features
    (normalised) on the same inputs; our preprocessing matches the HF image processor's on a real
    photo to within 0.05 in any normalised pixel value (measured 0.015 for CLIP, 0.008 for SigLIP:
    different resampling code), and embedding either pixel tensor gives the same direction to 1e-3."""
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    import tinymvlm

    folder = sources[kind]
    model, preprocess, tokenizer = tinymvlm.load(folder)
    full = AutoModel.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    hf_tok = AutoTokenizer.from_pretrained(folder)

    ours = preprocess(_photo())[None]
    theirs = processor(images=_photo(), return_tensors="pt")["pixel_values"]
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max() < 0.05 and (ours - theirs).abs().mean() < 1e-3
    with torch.no_grad():
        expected = torch.nn.functional.normalize(_tensor(full.get_image_features(pixel_values=theirs)), dim=-1)
        assert torch.allclose(model.encode_image(theirs), expected, atol=1e-5)
        assert (model.encode_image(ours) - expected).abs().max() < 1e-3

        texts = ["a red square", "a photo of the cat in snow"]
        padding = "max_length" if kind == "siglip" else "longest"  # SigLIP was trained padded to its full length
        batch = hf_tok(texts, padding=padding, max_length=model.config.context_length, return_tensors="pt")
        kwargs = {} if kind == "siglip" else {"attention_mask": batch["attention_mask"]}
        expected = torch.nn.functional.normalize(_tensor(full.get_text_features(input_ids=batch["input_ids"], **kwargs)), dim=-1)
        assert torch.allclose(model.encode_text(tokenizer(texts)), expected, atol=1e-5)
        short = hf_tok(texts, padding="longest", return_tensors="pt")  # what indexing and training feed it
        assert torch.allclose(model.encode_text(short["input_ids"], short["attention_mask"]), expected, atol=1e-5)


def test_open_clip_model_embeds_as_encode_image_and_encode_text(sources):
    """The same for open_clip: its own transform, tokenizer, encode_image and encode_text."""
    import tinymvlm

    file = sources["open_clip"].split("/", 1)[1]
    clip, _, transform = open_clip.create_model_and_transforms(OPEN_CLIP_ARCH, pretrained=file)
    clip.eval()
    model, preprocess, tokenizer = tinymvlm.load(sources["open_clip"])
    ours, theirs = preprocess(_photo())[None], transform(_photo())[None]
    assert ours.shape == theirs.shape and (ours - theirs).abs().max() < 0.05
    texts = ["a red square", "A Dog's photo, 10:30!"]
    oc_ids = open_clip.get_tokenizer(OPEN_CLIP_ARCH)(texts)
    ids = tokenizer(texts)
    assert torch.equal(ids.masked_fill(ids == model.pad_token_id, 0), oc_ids.masked_fill(oc_ids == 49407, 0))
    with torch.no_grad():
        assert torch.allclose(model.encode_image(theirs), clip.encode_image(theirs, normalize=True), atol=1e-5)
        assert torch.allclose(model.encode_text(ids), clip.encode_text(oc_ids, normalize=True), atol=1e-5)


# ----------------------------------------------------------------------------- import and reload


def test_import_once_then_offline_bit_for_bit_and_an_edited_folder_imports_again(sources, model_cache):
    from tinymvlm.models.checkpoint import load_checkpoint
    from tinymvlm.models.resolve import resolve_model

    path = resolve_model(sources["clip"])
    assert path.parent == model_cache
    assert resolve_model("hf:" + sources["clip"]) == path  # the same folder, spelled with its prefix
    stamp = path.stat().st_mtime_ns
    assert resolve_model(sources["clip"]) == path and path.stat().st_mtime_ns == stamp  # not imported again
    first, _, meta = load_checkpoint(path)
    second, _, _ = load_checkpoint(path)
    assert meta["source"]["kind"] == "hf" and "text_config" not in meta
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name
    edited = sources["clip"] + "/tokenizer_config.json"
    data = json.loads(open(edited).read())
    data["model_max_length"] = 16
    open(edited, "w").write(json.dumps(data))
    assert resolve_model(sources["clip"]) != path


# -------------------------------------------------------------------------------------- commands


@pytest.mark.parametrize("kind", ["clip", "siglip", "open_clip"])
def test_every_command_takes_the_model(tmp_path, colour_folder, sources, kind):
    """index, search (text and image), score and eval with --model; the index records the imported
    checkpoint, so a later search needs no --model; --checkpoint is the same option."""
    runner = CliRunner()
    index = tmp_path / "index"
    result = runner.invoke(cli, ["index", str(colour_folder), "--index", str(index), "--model", sources[kind]])
    assert result.exit_code == 0, result.output
    assert "importing" in result.output  # the one-time import says so
    manifest = json.loads((index / "manifest.json").read_text())
    assert "tinymvlm/models" in manifest["model"]["checkpoint"]
    hits = runner.invoke(cli, ["search", "a red square", "--index", str(index), "--json", "-k", "3"])
    assert hits.exit_code == 0, hits.output
    assert len([json.loads(line) for line in hits.stdout.splitlines()]) == 3
    like = runner.invoke(cli, ["search", "--image", str(colour_folder / "red.png"), "--index", str(index), "--json",
                               "-k", "1", "--checkpoint", sources[kind]])
    assert like.exit_code == 0 and json.loads(like.stdout)["path"].endswith("red.png"), like.output
    scored = runner.invoke(cli, ["score", str(colour_folder / "red.png"), "-c", "a red square", "-c", "a blue square",
                                 "--model", sources[kind], "--json"])
    assert scored.exit_code == 0, scored.output
    assert abs(sum(c["probability"] for c in json.loads(scored.stdout)["captions"]) - 1) < 1e-4
    evaluated = runner.invoke(cli, ["eval", "--model", sources[kind], "--data", str(colour_folder), "--json",
                                    str(tmp_path / "eval.json")])
    assert evaluated.exit_code == 0, evaluated.output
    assert "t2i_R@1" in json.loads((tmp_path / "eval.json").read_text())["metrics"]


def test_zeroshot_eval_takes_the_model(tmp_path, sources):
    from conftest import COLOURS

    for name, rgb in list(COLOURS.items())[:3]:
        (tmp_path / "classes" / name).mkdir(parents=True)
        Image.new("RGB", (40, 40), rgb).save(tmp_path / "classes" / name / "a.png")
    result = CliRunner().invoke(cli, ["eval", "--zeroshot", "--data", str(tmp_path / "classes"), "--model", sources["siglip"],
                                      "--json", str(tmp_path / "zs.json")])
    assert result.exit_code == 0, result.output
    assert "acc1" in json.loads((tmp_path / "zs.json").read_text())["metrics"]


@pytest.mark.parametrize("kind", ["clip", "open_clip"])
def test_train_from_a_pretrained_model_resumes_and_reloads_bit_for_bit(tmp_path, colour_folder, sources, kind):
    """`tmv train --model` starts from the source's towers, heads and temperature (in bf16 for one
    of them), records it in config.yaml, resumes, and its checkpoint rebuilds the fine-tuned model
    offline exactly."""
    import tinymvlm
    from tinymvlm.models.checkpoint import fingerprint, load_checkpoint, read_metadata
    from tinymvlm.models.resolve import resolve_model

    run = tmp_path / "run"
    args = ["train", "--data", str(colour_folder), "--model", sources[kind], "--out-dir", str(run), "--batch-size", "4",
            "--workers", "0", "--image-views", "2", "--warmup-steps", "1", "--lr", "1e-2", "--tower-lr", "1e-2",
            "--lock-text", "--lock-text-unlocked", "1", "--precision", "bf16" if kind == "clip" else "fp32"]
    result = CliRunner().invoke(cli, [*args, "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert f"base_model: {sources[kind]}" in (run / "config.yaml").read_text()
    base, _, _ = load_checkpoint(resolve_model(sources[kind]))
    tuned, _, meta = load_checkpoint(run / "latest.safetensors")
    assert meta["source"]["kind"] == ("open_clip" if kind == "open_clip" else "hf")
    image_keys = [k for k in base.state_dict() if k.startswith("image_tower.")]
    assert all(torch.equal(base.state_dict()[k], tuned.state_dict()[k]) for k in image_keys)  # locked (the default)
    changed = {k for k in base.state_dict() if not torch.equal(base.state_dict()[k], tuned.state_dict()[k])}
    last_layer = "text_tower.clip.transformer.resblocks.0." if kind == "open_clip" else "text_tower.text_model.encoder.layers.1."
    assert any(k.startswith(last_layer) for k in changed) and "logit_scale" in changed
    assert not any("embedding" in k or "layers.0." in k for k in changed)  # the rest of the text tower is locked
    resumed = CliRunner().invoke(cli, ["train", "--out-dir", str(run), "--resume", "latest", "--epochs", "2", "--workers", "0"])
    assert resumed.exit_code == 0, resumed.output
    assert read_metadata(run / "latest.safetensors")["info"]["epoch"] == 2

    model, preprocess, tokenizer = tinymvlm.load(run / "latest.safetensors")
    again, _, _ = tinymvlm.load(run / "latest.safetensors")
    assert fingerprint(model) == fingerprint(again) == read_metadata(run / "latest.safetensors")["fingerprint"]
    pixels = preprocess(Image.open(colour_folder / "red.png"))[None]
    with torch.no_grad():
        assert torch.equal(model.encode_image(pixels), again.encode_image(pixels))
        assert torch.equal(model.encode_text(tokenizer(["a red square"])), again.encode_text(tokenizer(["a red square"])))


def test_a_config_file_names_the_model_as_the_flag_does(tmp_path):
    from tinymvlm.training.run_config import read_config

    for key in ("model", "base_model"):
        (tmp_path / "c.yaml").write_text(f"{key}: hf:org/name\nepochs: 2\n")
        assert read_config(tmp_path / "c.yaml").base_model == "hf:org/name"


def test_unlocking_image_groups_needs_a_timm_tower(sources):
    from tinymvlm.errors import TmvError
    from tinymvlm.models.checkpoint import load_checkpoint
    from tinymvlm.models.resolve import resolve_model
    from tinymvlm.training import freeze

    model, _, _ = load_checkpoint(resolve_model(sources["clip"]))
    with pytest.raises(TmvError, match="--no-lock-image"):
        freeze.lock_image(model, 1)


# ------------------------------------------------------------------------------------- bad input


def _one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def not_a_model(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "x.png")
    return folder


@pytest.mark.parametrize("case", ["unknown", "neither", "hub-offline", "open_clip-offline", "open_clip-unknown-arch",
                                  "not-clip", "open_clip-bad-tag"])
def test_bad_model_is_one_line_and_writes_nothing(tmp_path, colour_folder, not_a_model, tiny_text_model, model_cache, case):
    ref, expected = {
        "unknown": ("no-such-model", ("unknown model 'no-such-model'", "hf:ORG/NAME")),
        "neither": (str(not_a_model), ("neither a tmv run folder", "Hugging Face CLIP/SigLIP folder")),
        "hub-offline": ("hf:openai/clip-vit-base-patch32", ("cannot be reached", "builtin", "local Hugging Face")),
        "open_clip-offline": ("open_clip:ViT-B-32/laion2b_s34b_b79k", ("cannot be reached", "open_clip:ARCH/FILE")),
        "open_clip-unknown-arch": ("open_clip:No-Such-Arch/openai", ("unknown open_clip model 'No-Such-Arch'",)),
        "open_clip-bad-tag": ("open_clip:ViT-B-32/nonsense", ("neither a file nor a pretrained tag", "laion2b_s34b_b79k")),
        "not-clip": (str(tiny_text_model), ("'bert' model, not CLIP or SigLIP",)),
    }[case]
    index = tmp_path / "index"
    for args in (["index", str(colour_folder), "--index", str(index)], ["score", str(colour_folder / "red.png"), "-c", "a cat"],
                 ["eval", "--data", str(colour_folder)]):
        result = CliRunner().invoke(cli, [*args, "--model", ref])
        _one_line_error(result, *expected)
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert not index.exists() and not model_cache.exists()


def test_open_clip_without_the_extra_is_one_line(tmp_path, colour_folder, monkeypatch, model_cache):
    import sys

    monkeypatch.setitem(sys.modules, "open_clip", None)  # as if not installed: importing it fails
    result = CliRunner().invoke(cli, ["index", str(colour_folder), "--index", str(tmp_path / "i"), "--model",
                                      "open_clip:ViT-B-32/openai"])
    _one_line_error(result, "pip install 'tinymvlm[openclip]'")
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "i").exists() and not model_cache.exists()


def test_a_model_of_another_embedding_size_is_refused_by_the_index(tmp_path, colour_folder, sources, tiny_checkpoint):
    index = tmp_path / "index"
    assert CliRunner().invoke(cli, ["index", str(colour_folder), "--index", str(index), "--model", str(tiny_checkpoint)]).exit_code == 0
    before = {p.name: p.stat().st_mtime_ns for p in index.iterdir() if p.name != "lock"}
    for args in (["index", str(colour_folder), "--index", str(index)], ["search", "a cat", "--index", str(index)]):
        _one_line_error(CliRunner().invoke(cli, [*args, "--model", sources["siglip"]]),
                        "16-dimensional vectors, this model embeds 32", "--rebuild")
    assert {p.name: p.stat().st_mtime_ns for p in index.iterdir() if p.name != "lock"} == before


def test_dimension_guard_uses_the_imported_models_own_size(sources):
    from tinymvlm.models.checkpoint import read_metadata
    from tinymvlm.models.resolve import resolve_model

    sizes = {kind: read_metadata(resolve_model(ref))["model_config"]["embed_dim"] for kind, ref in sources.items()}
    assert sizes == {"clip": 16, "siglip": 32, "open_clip": 16}


def test_serve_takes_the_model(tmp_path, colour_folder, sources):
    import urllib.request

    from helpers.serving import ServerProcess

    index = tmp_path / "index"
    assert CliRunner().invoke(cli, ["index", str(colour_folder), "--index", str(index), "--model", sources["siglip"]]).exit_code == 0
    server = ServerProcess("--index", str(index), "--model", sources["siglip"], "--device", "cpu")
    try:
        with urllib.request.urlopen(server.url.rstrip("/") + "/api/search?q=a+red+square&k=3", timeout=60) as response:
            answer = json.loads(response.read())
        with urllib.request.urlopen(server.url.rstrip("/") + "/api/info", timeout=60) as response:
            info = json.loads(response.read())
    finally:
        server.stop()
    assert len(answer["results"]) == 3
    assert info["model"]["image_arch"] == "hf:siglip"


def test_two_processes_fine_tune_a_pretrained_model_as_one_with_the_global_batch(tmp_path, colour_folder, sources):
    """`tmv train --nproc 2 --model` with batch 4 per rank takes the same steps as one process with
    batch 8 (the whole model trains: the tiny CLIP has no dropout)."""
    import os
    import subprocess
    import sys

    common = ["train", "--data", str(colour_folder), "--model", sources["clip"], "--val-fraction", "0", "--epochs", "1",
              "--workers", "0", "--warmup-steps", "0", "--no-lock-image", "--device", "cpu", "--precision", "fp32"]
    single = CliRunner().invoke(cli, [*common, "--batch-size", "8", "--out-dir", str(tmp_path / "single")])
    assert single.exit_code == 0, single.output
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-m", "tinymvlm.cli", *common, "--batch-size", "4", "--nproc", "2",
                             "--out-dir", str(tmp_path / "ddp")], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr

    def losses(run):
        return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["type"] == "step"]

    assert losses(tmp_path / "ddp") == pytest.approx(losses(tmp_path / "single"), abs=1e-6)
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "single" / "best.safetensors"), load_file(tmp_path / "ddp" / "best.safetensors")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
