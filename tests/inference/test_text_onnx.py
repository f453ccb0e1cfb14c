"""Text searches on the ONNX export of the model's text path (tinymvlm/inference/text_onnx.py): the same hits
as torch, no torch imported, and torch whenever the file is missing, unreadable, foreign or unfit."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from tinymvlm.index import Index

from tinymvlm.inference import text_onnx
from tinymvlm.inference.runtime import Runtime
from tinymvlm.models.metadata import read_metadata

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

QUERIES = ["a plain red square", "green", 'blue + "a square" - yellow:0.5', "Ünïcödé 東京 🐧 " * 30]
TOLERANCE = 1e-4  # per score, ONNX against torch


def _hits(index: Index, query: str, texts: bool = False) -> list[tuple[int, float]]:
    return [(h.id, h.score) for h in index.search(query, k=8, texts=texts)]


def _same(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> None:
    assert [i for i, _ in a] == [i for i, _ in b]
    assert max(abs(x - y) for (_, x), (_, y) in zip(a, b)) <= TOLERANCE


def _build(folder, checkpoint, images, captions=None) -> None:
    with Index(folder, checkpoint=checkpoint, runtime=Runtime(device="cpu", workers=0)) as index:
        index.add([images], captions=[captions] if captions else ())


def _torch_hits(folder, query: str, texts: bool, monkeypatch, tmp_path) -> list[tuple[int, float]]:
    return _all_torch_hits(folder, [(query, texts)], monkeypatch, tmp_path)[0]


def _all_torch_hits(folder, queries, monkeypatch, tmp_path) -> list[list[tuple[int, float]]]:
    """The torch path's hits: a cache folder that cannot exist (under a file) holds no encoder."""
    (tmp_path / "not-a-folder").write_text("")
    with monkeypatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path / "not-a-folder" / "cache"))
        with Index(folder, runtime=Runtime.for_queries("cpu")) as index:
            hits = [_hits(index, query, texts) for query, texts in queries]
            assert index._model is not None and index.text_encoder() is None  # it did run torch
    return hits


def _onnx_index(folder) -> Index:
    index = Index(folder, runtime=Runtime.for_queries())
    assert index.text_encoder() is not None
    return index


@pytest.fixture(scope="module")
def packaged_checkpoint(tmp_path_factory):
    """An untrained model of the packaged towers (MiniLM-L6 text, EfficientNet-Lite0 image)."""
    import torch

    from tinymvlm.models.checkpoint import save_checkpoint
    from tinymvlm.models.config import ModelConfig
    from tinymvlm.models.factory import create_model

    torch.manual_seed(0)
    model, tokenizer = create_model(ModelConfig(image_model="efficientnet_lite0", text_model="minilm-l6", image_size=64,
                                                 label_prior=False))
    path = tmp_path_factory.mktemp("packaged") / "model.safetensors"
    save_checkpoint(path, model, tokenizer, {"epoch": 0})
    return path


def test_onnx_hits_equal_torch_hits_on_the_packaged_towers(packaged_checkpoint, colour_folder, tmp_path, monkeypatch):
    captions = tmp_path / "captions.txt"
    captions.write_text("a red square\na green circle\na blue sky\na yellow sun\n", encoding="utf-8")
    _build(tmp_path / "idx", packaged_checkpoint, colour_folder, captions)
    fingerprint = read_metadata(packaged_checkpoint)["fingerprint"]
    assert text_onnx.encoder_path(fingerprint).is_file()  # written by the indexing run
    queries = [(query, texts) for query in QUERIES for texts in (False, True)]
    with _onnx_index(tmp_path / "idx") as fast:
        fast_hits = [_hits(fast, query, texts) for query, texts in queries]
        assert fast._model is None  # no weights were loaded into torch
    for got, expected in zip(fast_hits, _all_torch_hits(tmp_path / "idx", queries, monkeypatch, tmp_path)):
        _same(got, expected)


@pytest.fixture
def tiny_index(tiny_checkpoint, colour_folder, tmp_path):
    _build(tmp_path / "idx", tiny_checkpoint, colour_folder)
    return tmp_path / "idx"


@pytest.mark.parametrize("model_given", [False, True])
def test_a_cli_text_search_imports_neither_torch_nor_transformers(model_given, tiny_index, tiny_checkpoint, tmp_path,
                                                                  monkeypatch):
    given = ["--checkpoint", str(tiny_checkpoint)] if model_given else []
    code = ("import sys\nfrom tinymvlm.cli.main import cli\n"
            f"cli(['search', 'a plain red square', '--index', {str(tiny_index)!r}, '--json', '-k', '8', *{given!r}], "
            "standalone_mode=False)\n"
            "print(json.dumps(sorted(m for m in ('torch', 'transformers', 'timm') if m in sys.modules)))\n")
    result = subprocess.run([sys.executable, "-c", "import json\n" + code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    *lines, loaded = result.stdout.strip().splitlines()
    assert json.loads(loaded) == []
    hits = [(d["id"], d["score"]) for d in map(json.loads, lines)]
    _same(hits, _torch_hits(tiny_index, "a plain red square", False, monkeypatch, tmp_path))


def test_a_missing_encoder_falls_back_to_torch_and_is_written(tiny_index, tiny_checkpoint, tmp_path, monkeypatch):
    path = text_onnx.encoder_path(read_metadata(tiny_checkpoint)["fingerprint"])
    path.unlink()
    with Index(tiny_index, runtime=Runtime.for_queries()) as index:
        assert index.text_encoder() is None
        first = _hits(index, "a plain red square")
        assert index._model is not None and path.is_file()  # torch answered, then wrote the file
    with _onnx_index(tiny_index) as fast:
        _same(_hits(fast, "a plain red square"), first)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "another model's"])
def test_an_unreadable_or_foreign_encoder_is_not_used_and_is_rewritten(damage, tiny_index, tiny_checkpoint,
                                                                        other_checkpoint, colour_folder, tmp_path,
                                                                        monkeypatch, caplog):
    path = text_onnx.encoder_path(read_metadata(tiny_checkpoint)["fingerprint"])
    expected = _torch_hits(tiny_index, "green", False, monkeypatch, tmp_path)
    if damage == "garbage":
        path.write_bytes(b"\0not onnx" * 100)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        _build(tmp_path / "other", other_checkpoint, colour_folder)
        path.write_bytes(text_onnx.encoder_path(read_metadata(other_checkpoint)["fingerprint"]).read_bytes())
    with Index(tiny_index, runtime=Runtime.for_queries()) as index:
        assert index.text_encoder() is None
        _same(_hits(index, "green"), expected)  # torch, not the damaged file
    assert "using torch" in caplog.text
    with _onnx_index(tiny_index) as fast:  # the search wrote a good file again
        _same(_hits(fast, "green"), expected)


def test_an_unwritable_cache_leaves_searches_on_torch(tiny_index, tmp_path, monkeypatch):
    expected = _torch_hits(tiny_index, "blue", False, monkeypatch, tmp_path)  # this cache cannot even be made
    assert not (tmp_path / "not-a-folder" / "cache").exists()
    with Index(tiny_index, runtime=Runtime.for_queries()) as index:
        _same(_hits(index, "blue"), expected)


def test_an_export_that_differs_from_torch_is_refused_once_and_for_all(tiny_checkpoint, colour_folder, tmp_path,
                                                                        monkeypatch, user_cache):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(text_onnx, "TOLERANCE", -1.0)  # no export can be that close
    _build(tmp_path / "idx", tiny_checkpoint, colour_folder)
    fingerprint = read_metadata(tiny_checkpoint)["fingerprint"]
    assert not text_onnx.encoder_path(fingerprint).exists()
    assert "differs from torch" in (text_onnx.cache_dir() / f"{fingerprint}.unsupported").read_text()
    assert not text_onnx.needs_export(fingerprint)  # later commands do not try again
    assert not list(text_onnx.cache_dir().glob(".*.tmp"))


def test_cuda_or_bf16_runtimes_keep_torch(tiny_index):
    for runtime in (Runtime(device="cuda"), Runtime(device="cpu", precision="bf16")):
        assert Index(tiny_index, runtime=runtime).text_encoder() is None


def test_without_onnxruntime_every_query_uses_torch(tiny_index, tiny_checkpoint, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as where it has no wheel: importing it fails
    fingerprint = read_metadata(tiny_checkpoint)["fingerprint"]
    assert text_onnx.encoder_exists(fingerprint)
    with Index(tiny_index, runtime=Runtime.for_queries()) as index:
        assert index.text_encoder() is None
        assert len(index.search("a plain red square", k=3)) == 3 and index._model is not None
