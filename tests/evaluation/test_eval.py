"""`tmv eval` and tinymvlm.evaluation.retrieval on the tiny checkpoint: numbers checked against an independent
computation, the run-default data, JSON output, and one-line errors for bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from click.testing import CliRunner
from test_metrics import brute_force
from tinymvlm.cli.main import cli

from tinymvlm.data.pairs import load_pairs
from tinymvlm.data.transform import build_transforms
from tinymvlm.evaluation.retrieval import evaluate_retrieval
from tinymvlm.evaluation.zeroshot import DEFAULT_TEMPLATES, load_labelled, spread
from tinymvlm.inference.runtime import Runtime
from tinymvlm.models.checkpoint import load_checkpoint

FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def caption_pairs(colour_folder) -> Path:
    """Several captions per image, one caption string shared by two images."""
    rows = ["image\tcaption"]
    for name in ("red", "green", "blue", "yellow", "black", "white"):
        rows += [f"{name}.png\ta plain {name} square", f"{name}.png\tsomething {name}"]
    rows += ["red.png\ta colour", "blue.png\ta colour"]
    path = colour_folder / "pairs.tsv"
    path.write_text("\n".join(rows) + "\n")
    return path


@torch.inference_mode()
def _by_hand(model, tokenizer, images, texts) -> tuple[np.ndarray, np.ndarray]:
    transform = build_transforms(model.data_config, training=False)
    pixels = torch.stack([transform(im) for im in images])
    image_emb = model.encode_image(pixels).numpy()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=model.config.context_length, return_tensors="pt")
    text_emb = model.encode_text(batch["input_ids"], batch["attention_mask"]).numpy()
    return image_emb, text_emb


def _run(*args: str):
    return CliRunner().invoke(cli, ["eval", *args, "--workers", "0"])


def test_recall_matches_brute_force_on_the_models_own_embeddings(tiny_checkpoint, caption_pairs):
    model, tokenizer, _ = load_checkpoint(tiny_checkpoint)
    pairs = load_pairs(str(caption_pairs))
    # fp32 like the reference by hand: `auto` is bf16 on CPUs that run it natively, and bf16 rounding
    # reorders the near-tied similarities of an untrained model
    result = evaluate_retrieval(model, tokenizer, pairs, [1, 2, 5], Runtime(precision="fp32", batch_size=4), chunk=3)
    assert (result.images, result.captions, result.shared_captions) == (6, 14, 2)
    texts = [c for caps in pairs.captions for c in caps]
    text_image = [i for i, caps in enumerate(pairs.captions) for _ in caps]
    image_emb, text_emb = _by_hand(model, tokenizer, [pairs.images.open(i) for i in range(len(pairs))], texts)
    t2i, i2t = brute_force(text_emb.astype(np.float64) @ image_emb.T.astype(np.float64), text_image)
    for k in (1, 2, 5):
        assert result.metrics[f"t2i_R@{k}"] == pytest.approx((t2i <= k).mean() * 100)
        assert result.metrics[f"i2t_R@{k}"] == pytest.approx((i2t <= k).mean() * 100)
    assert result.metrics["t2i_mean_rank"] == pytest.approx(t2i.mean())


def test_cli_writes_a_table_and_json(tiny_checkpoint, caption_pairs, tmp_path):
    out = tmp_path / "eval.json"
    result = _run("--checkpoint", str(tiny_checkpoint), "--data", str(caption_pairs), "--recall", "1", "5", "100",
                  "--json", str(out))
    assert result.exit_code == 0, result.output
    assert "text → image" in result.stdout and "image → text" in result.stdout and "R@100" in result.stdout
    record = json.loads(out.read_text())
    assert record["task"] == "retrieval" and record["ks"] == [1, 5, 100]
    assert record["metrics"]["t2i_R@100"] == 100 and record["metrics"]["i2t_R@100"] == 100
    assert {"t2i_R@1", "i2t_R@5", "t2i_median_rank", "i2t_mean_rank"} <= set(record["metrics"])
    assert record["dataset"]["images"] == 6 and record["dataset"]["captions"] == 14
    assert record["dataset"]["shared_caption_rows"] == 2
    assert record["checkpoint"]["model_config"]["embed_dim"] == 16 and len(record["checkpoint"]["fingerprint"]) == 16
    settings = record["settings"]  # as resolved, not "auto"
    assert settings["precision"] in ("fp32", "bf16") and settings["device"] != "auto" and settings["batch_size"] == 64


def test_a_sample_keeps_the_count_of_skipped_rows(tiny_checkpoint, caption_pairs, tmp_path):
    with caption_pairs.open("a") as fh:
        fh.write("missing.png\ta lost square\n")
    out = tmp_path / "eval.json"
    result = _run("--checkpoint", str(tiny_checkpoint), "--data", str(caption_pairs), "--limit", "3", "--device", "cpu",
                  "--json", str(out))
    assert result.exit_code == 0, result.output
    dataset = json.loads(out.read_text())["dataset"]
    assert (dataset["images"], dataset["skipped"], dataset["limit"]) == (3, 1, 3)


def test_no_flags_evaluate_the_latest_runs_validation_split(tiny_checkpoint, colour_folder, tmp_path, monkeypatch):
    run = tmp_path / "runs" / "20240101-000000"
    run.mkdir(parents=True)
    shutil.copy(tiny_checkpoint, run / "best.safetensors")
    shutil.copy(tiny_checkpoint, run / "latest.safetensors")
    (run / "config.yaml").write_text(yaml.safe_dump({"data": str(colour_folder), "val_fraction": 0.5}))
    monkeypatch.setenv("TMV_RUNS", str(tmp_path / "runs"))
    _, val = load_pairs(str(colour_folder)).split(0.5)
    out = tmp_path / "eval.json"
    result = _run("--recall", "1", "--json", str(out))
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert record["checkpoint"]["path"] == str(run / "best.safetensors")
    assert record["checkpoint"]["run_config"]["val_fraction"] == 0.5
    assert record["dataset"]["name"].endswith("(val)") and record["dataset"]["images"] == len(val) > 0


@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_zeroshot_fashion_mnist_matches_a_hand_computation(tiny_checkpoint, tmp_path):
    out = tmp_path / "zs.json"
    result = _run("--checkpoint", str(tiny_checkpoint), "--zeroshot", "--data", str(FASHION), "--split", "test",
                  "--limit", "20", "--json", str(out))
    assert result.exit_code == 0, result.output
    assert "top-1 accuracy" in result.stdout and "Ankle boot" in result.stdout
    record = json.loads(out.read_text())
    labelled = load_labelled(str(FASHION), "test")
    labelled = labelled.subset(spread(len(labelled), 20))
    model, tokenizer, _ = load_checkpoint(tiny_checkpoint)
    prompts = [t.replace("{}", c) for c in labelled.classes for t in DEFAULT_TEMPLATES]
    image_emb, prompt_emb = _by_hand(model, tokenizer, [labelled.images.open(i) for i in range(20)], prompts)
    classes = F.normalize(torch.from_numpy(prompt_emb).view(10, len(DEFAULT_TEMPLATES), -1).mean(1), dim=-1).numpy()
    scores = image_emb @ classes.T
    order = np.argsort(-scores, axis=1)
    assert record["metrics"]["acc1"] == pytest.approx((order[:, 0] == labelled.labels).mean() * 100, abs=1e-4)
    assert record["metrics"]["acc5"] == pytest.approx((order[:, :5] == labelled.labels[:, None]).any(1).mean() * 100, abs=1e-4)
    assert np.array(record["confusion_matrix"]).sum() == 20 and record["classes"][0] == "T-shirt/top"
    assert record["dataset"]["images"] == 20 and record["templates"] == list(DEFAULT_TEMPLATES)


def test_zeroshot_class_folder_with_templates(tiny_checkpoint, colour_folder, tmp_path, monkeypatch):
    """The templates given are the prompts embedded, each filled with each class name (seen in the
    texts the model embeds, not only in the record's key)."""
    from tinymvlm.evaluation import zeroshot

    embedded: list[str] = []
    original = zeroshot.embed_texts

    def recording(model, tokenizer, texts, runtime):
        embedded.extend(texts)
        return original(model, tokenizer, texts, runtime)

    monkeypatch.setattr(zeroshot, "embed_texts", recording)
    root = tmp_path / "classes"
    for name in ("red", "blue", "green"):
        (root / name).mkdir(parents=True)
        shutil.copy(colour_folder / f"{name}.png", root / name / "x.png")
    out = tmp_path / "zs.json"
    result = _run("--checkpoint", str(tiny_checkpoint), "--zeroshot", "--data", str(root),
                  "--template", "a {} square", "--template", "{}", "--json", str(out))
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert record["classes"] == ["blue", "green", "red"] and record["templates"] == ["a {} square", "{}"]
    assert embedded == ["a blue square", "blue", "a green square", "green", "a red square", "red"]
    assert set(record["metrics"]) == {"acc1", "mean_per_class_recall"}


def _one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("error:") and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in lines[-1]


def test_bad_k_is_a_one_line_error(tiny_checkpoint, caption_pairs):
    _one_line_error(_run("--checkpoint", str(tiny_checkpoint), "--data", str(caption_pairs), "--recall", "5", "0"),
                    "recall k must be a positive integer, got 0")
    assert len(_run("--checkpoint", str(tiny_checkpoint), "--recall", "0").output.strip().splitlines()) == 1
    _one_line_error(_run("--recall", "1", "-5"), "recall k must be a positive integer, got -5")
    _one_line_error(_run("--limit", "-5"), "--limit must be positive")


def test_unknown_checkpoint_format_is_a_one_line_error(tmp_path, caption_pairs):
    bogus = tmp_path / "model.pt"
    bogus.write_bytes(b"\x80\x04\x95 not a safetensors file")
    result = _run("--checkpoint", str(bogus), "--data", str(caption_pairs))
    _one_line_error(result, "not a tinymvlm checkpoint")
    assert [line for line in result.output.strip().splitlines() if not line.startswith("model: ")] == [
        result.output.strip().splitlines()[-1]]


def test_no_usable_pairs_is_a_one_line_error(tiny_checkpoint, tmp_path):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("image\tcaption\nmissing.png\ta thing\n")
    _one_line_error(_run("--checkpoint", str(tiny_checkpoint), "--data", str(pairs)), "no usable image-caption pairs")


def test_checkpoint_without_a_run_needs_data(tiny_checkpoint):
    result = _run("--checkpoint", str(tiny_checkpoint))
    _one_line_error(result, "pass --data")


@pytest.mark.parametrize("args, fragment", [
    (["--zeroshot"], "--zeroshot needs --data"),
    (["--zeroshot", "--recall", "1"], "drop --recall"),
    (["--template", "a {}"], "are for --zeroshot"),
    (["--limit", "0"], "--limit must be positive"),
    (["--zeroshot", "--data", ".", "--template", "no slot"], "has no '{}'"),
])
def test_option_misuse_is_a_one_line_error(tiny_checkpoint, args, fragment):
    _one_line_error(_run("--checkpoint", str(tiny_checkpoint), *args), fragment)


# ------------------------------------------------------------------------------------- --index


@pytest.fixture
def colour_index(tiny_checkpoint, colour_folder, caption_pairs, tmp_path) -> Path:
    """A flat index of all 8 colour images (6 of them in the evaluation pairs) and the pairs' captions."""
    from tinymvlm.index import Index, IndexSpec

    from tinymvlm.inference.runtime import Runtime

    with Index(tmp_path / "idx", checkpoint=tiny_checkpoint) as index:
        index.add([colour_folder], captions=[caption_pairs], spec=IndexSpec(type="flat"),
                  runtime=Runtime(workers=0, precision="fp32"))
    return tmp_path / "idx"


def test_index_evaluation_reports_search_exact_and_cost(tiny_checkpoint, caption_pairs, colour_index, tmp_path):
    out = tmp_path / "eval.json"
    result = _run("--checkpoint", str(tiny_checkpoint), "--data", str(caption_pairs), "--index", str(colour_index),
                  "--recall", "1", "3", "--json", str(out))
    assert result.exit_code == 0, result.output
    assert "recall cost" in result.stdout
    index = json.loads(out.read_text())["index"]
    assert (index["images_in_index"], index["eval_images_found"], index["eval_images_missing"]) == (8, 6, 0)
    assert index["t2i_queries"] == 14 and index["i2t_queries"] == 6
    assert set(index["search"]) == {"t2i_R@1", "t2i_R@3", "i2t_R@1", "i2t_R@3"}
    assert index["search"] == index["exact"]  # a flat index is exact
    assert all(v == 0 for v in index["recall_cost"].values())


def test_index_evaluation_measures_what_search_returns(tiny_checkpoint, caption_pairs, colour_index):
    """A search that returns the wrong top hits costs exactly the recall it loses."""
    from tinymvlm.index import Index

    from tinymvlm.evaluation.index_retrieval import evaluate_index

    model, tokenizer, _ = load_checkpoint(tiny_checkpoint)
    pairs = load_pairs(str(caption_pairs))
    emb = evaluate_retrieval(model, tokenizer, pairs, [1], Runtime()).embedded

    class Reversed:
        """The real searcher, but the best hits come last."""

        def __init__(self, searcher) -> None:
            self.searcher, self.catalog, self.manifest, self.store = searcher, searcher.catalog, searcher.manifest, searcher.store

        def search(self, vector, k, kind):
            hits = self.searcher.search(vector, 100, kind)
            return list(reversed(hits))[:k]

    with Index(colour_index, checkpoint=tiny_checkpoint) as index:
        honest = evaluate_index(index.searcher(), pairs, emb, [1, 8])
        reversed_ = evaluate_index(Reversed(index.searcher()), pairs, emb, [1, 8])
    assert reversed_["exact"] == honest["exact"]
    assert reversed_["search"]["t2i_R@8"] == honest["search"]["t2i_R@8"] == 100  # all 8 images are returned
    assert reversed_["search"] != honest["search"]  # the reversed order is measured, not the exact one
    for key, cost in reversed_["recall_cost"].items():
        assert cost == honest["exact"][key] - reversed_["search"][key]


def test_index_of_another_model_is_a_one_line_error(tiny_model_config, caption_pairs, colour_index, tmp_path):
    from tinymvlm.models.checkpoint import save_checkpoint
    from tinymvlm.models.factory import create_model

    torch.manual_seed(1)
    model, tokenizer = create_model(tiny_model_config)
    other = tmp_path / "other.safetensors"
    save_checkpoint(other, model, tokenizer)
    result = _run("--checkpoint", str(other), "--data", str(caption_pairs), "--index", str(colour_index))
    _one_line_error(result, "was built with model")
    _one_line_error(_run("--checkpoint", str(other), "--data", str(caption_pairs), "--index", str(tmp_path / "none")),
                    "no index at")


def test_training_drop_in_matches_and_accepts_cached_features(tiny_checkpoint, caption_pairs):
    """Training's validation through tinymvlm.evaluation.retrieval.evaluate; cached tower features give the same numbers."""
    from tinymvlm.evaluation.retrieval import evaluate
    from tinymvlm.inference.runtime import Runtime

    model, tokenizer, _ = load_checkpoint(tiny_checkpoint)
    pairs = load_pairs(str(caption_pairs))
    runtime = Runtime.on("cpu", "fp32", batch_size=4, workers=0)
    plain = evaluate(model, tokenizer, pairs, runtime)
    transform = build_transforms(model.data_config, training=False)
    with torch.inference_mode():
        features = model.image_features(torch.stack([transform(pairs.images.open(i)) for i in range(len(pairs))]))
    assert evaluate(model, tokenizer, pairs, runtime, features=features) == pytest.approx(plain)
