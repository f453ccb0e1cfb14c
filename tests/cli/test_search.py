"""`tmv search` / `tmv index` CLI, query expressions, contact sheets, caption files, FAISS types."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from tinymvlm.cli.main import cli
from tinymvlm.index import vectors
from tinymvlm.index.caption_files import read_captions
from tinymvlm.index.catalog import Catalog
from tinymvlm.index.query_syntax import Term, parse_query
from tinymvlm.index.searcher import Hit, Searcher, combine
from tinymvlm.index.store import IndexStore
from tinymvlm.index.vectors import IndexSpec
from tinymvlm.serve.contact_sheet import contact_sheet

from tinymvlm.errors import TmvError


def test_query_expressions(tmp_path):
    from PIL import Image

    photo = tmp_path / "cat photo.jpg"
    Image.new("RGB", (8, 8)).save(photo)
    assert parse_query("cat") == [Term(1.0, text="cat")]
    assert parse_query('cat + "in snow" - dog:0.5') == [Term(1.0, text="cat"), Term(1.0, text="in snow"),
                                                         Term(-0.5, text="dog")]
    assert parse_query("t-shirt - stripes") == [Term(1.0, text="t-shirt"), Term(-1.0, text="stripes")]
    assert parse_query(f"{photo} + night:2") == [Term(1.0, image=str(photo)), Term(2.0, text="night")]
    assert parse_query(None, images=[str(photo)]) == [Term(1.0, image=str(photo))]
    assert parse_query("- dog") == [Term(-1.0, text="dog")]
    with pytest.raises(TmvError, match="give a query"):
        parse_query("  ")
    with pytest.raises(TmvError, match="no such file"):
        parse_query(None, images=[str(tmp_path / "missing.jpg")])
    with pytest.raises(TmvError, match="nothing after it"):
        parse_query("cat + ")


def test_combine_weights_and_normalises():
    terms = [Term(1.0, text="a"), Term(-0.5, text="b")]
    vec = combine(terms, np.array([[1, 0], [0, 1]], dtype=np.float32))
    np.testing.assert_allclose(vec, np.array([2, -1]) / np.sqrt(5), rtol=1e-6)
    with pytest.raises(TmvError, match="cancel out"):
        combine([Term(1.0, text="a"), Term(-1.0, text="a")], np.ones((2, 2), dtype=np.float32))


def test_contact_sheet_escapes_paths_and_captions(tmp_path):
    from PIL import Image

    hostile = tmp_path / '<img src=x onerror="alert(1)">.png'
    Image.new("RGB", (20, 10), (255, 0, 0)).save(hostile)
    hits = [Hit(1, 0.9, 1, "images", str(hostile)), Hit(2, 0.5, 2, "images", str(tmp_path / "gone.png")),
            Hit(1, 0.8, 3, "captions", "<script>alert('x')</script> & more")]
    page = contact_sheet(hits, "<b>query</b>")
    assert "<script>" not in page and "onerror=\"" not in page and "<b>query" not in page
    assert "&lt;script&gt;" in page and "&lt;b&gt;query&lt;/b&gt;" in page
    assert page.count("data:image/jpeg;base64,") == 1  # the missing file gets a placeholder, not a failure
    assert "cannot display" in page and "%3Cimg" in page


def test_caption_files(tmp_path):
    txt = tmp_path / "c.txt"
    txt.write_bytes(b"\xef\xbb\xbfa red  car\n\nblue sky\na red car\n\xff\xfe bad\n")
    parsed = read_captions(txt)
    assert parsed.texts == ["a red car", "blue sky"] and len(parsed.skipped) == 1
    tsv = tmp_path / "c.tsv"
    tsv.write_text("image\tcaption\nx.jpg\tA frog.\ny.jpg\tAn owl.\n", encoding="utf-8")
    assert read_captions(tsv).texts == ["A frog.", "An owl."]
    csv_file = tmp_path / "c.csv"
    csv_file.write_text('id,alt,score\n1,"a cat, sleeping",3\n2,dog,4\n', encoding="utf-8")
    assert read_captions(csv_file, column="alt").texts == ["a cat, sleeping", "dog"]
    with pytest.raises(TmvError, match="no column 'nope'"):
        read_captions(csv_file, column="nope")
    bare = tmp_path / "bare.tsv"
    bare.write_text("x.jpg\tA frog.\n", encoding="utf-8")
    assert read_captions(bare).texts == ["A frog."]
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"text": "hello"}\n{"caption": ["a", "b"]}\nnot json\n', encoding="utf-8")
    parsed = read_captions(jsonl)
    assert parsed.texts == ["hello", "a", "b"] and len(parsed.skipped) == 1


def test_ivf_and_hnsw_recall_and_updates():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 16))
    data = centres[rng.integers(0, 20, 4000)] + 0.3 * rng.normal(size=(4000, 16))
    data = (data / np.linalg.norm(data, axis=1, keepdims=True)).astype(np.float32)
    ids = np.arange(100, 4100, dtype=np.int64)
    queries = data[:50]
    exact = vectors.empty("flat", {}, 16)
    vectors.add(exact, ids, data)
    _, truth = vectors.search(exact, queries, 10)
    kind, params = vectors.resolve(IndexSpec(type="ivf", nprobe=8), len(ids))
    assert kind == "ivf" and params["nlist"] == min(int(4 * np.sqrt(4000)), 4000 // 39)  # enough points per cell
    ivf = vectors.empty(kind, params, 16)
    vectors.train(ivf, kind, data[vectors.train_sample(ids, params) - 100])
    vectors.add(ivf, ids, data)
    vectors.set_search_params(ivf, kind, nprobe=8)
    _, got = vectors.search(ivf, queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, got)])
    assert recall > 0.9
    vectors.remove(ivf, ids[:10])
    assert sorted(vectors.ids_of(ivf).tolist()) == ids[10:].tolist()
    hnsw_kind, hnsw_params = vectors.resolve(IndexSpec(type="hnsw"), len(ids))
    hnsw = vectors.empty(hnsw_kind, hnsw_params, 16)
    vectors.add(hnsw, ids, data)
    vectors.set_search_params(hnsw, hnsw_kind, ef_search=64)
    _, got = vectors.search(hnsw, queries, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, got)]) > 0.9
    # the auto type and the refit rules
    assert vectors.resolve(IndexSpec(), 1000)[0] == "flat"
    assert vectors.resolve(IndexSpec(), vectors.APPROX_THRESHOLD)[0] == "ivf"
    assert vectors.needs_refit("ivf", {"nlist": 100}, "ivf", {"nlist": 250}, removing=False)
    assert not vectors.needs_refit("ivf", {"nlist": 100}, "ivf", {"nlist": 150}, removing=True)
    assert vectors.needs_refit("hnsw", hnsw_params, "hnsw", hnsw_params, removing=True)
    with pytest.raises(TmvError, match="index type"):
        IndexSpec(type="annoy")


def test_reader_catches_up_with_a_changing_catalogue(tmp_path, colour_folder, tiny_checkpoint):
    """Rows committed after the FAISS file was written are found; rows deleted are never returned."""
    from tinymvlm.index import Index

    from tinymvlm.inference.runtime import Runtime

    folder = tmp_path / "idx"
    Index(folder, checkpoint=tiny_checkpoint).add([colour_folder], runtime=Runtime(workers=0))
    store = IndexStore(folder)
    writer = Catalog(store.catalog_path)
    red_id = writer.labels("images", writer.ids("images"))
    red_id = next(i for i, p in red_id.items() if p.endswith("red.png"))
    red = writer.vectors("images", [red_id], 16)[0]
    searcher = Searcher(store)
    assert searcher.search(red, 1)[0].path.endswith("red.png")
    probe = -red  # a vector no real row is close to
    with writer.transaction():
        writer.delete_images([red_id])
        writer.insert_image("/elsewhere/new.png", 1, 1, "h", probe)
    hits = searcher.search(probe, 3)
    assert hits[0].path == "/elsewhere/new.png" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert all(not h.path.endswith("red.png") for h in searcher.search(red, 8))
    assert len(searcher.search(red, 100)) == 8
    writer.close()
    searcher.close()


@pytest.fixture
def cli_index(tmp_path, colour_folder, tiny_checkpoint):
    folder = tmp_path / "idx"
    captions = tmp_path / "caps.txt"
    captions.write_text("a plain red square\na plain blue square\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["index", str(colour_folder), "--index", str(folder), "--checkpoint",
                                      str(tiny_checkpoint), "--captions", str(captions), "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "8 embedded" in result.output and "2 added" in result.output
    return folder


def test_cli_index_and_search_outputs(tmp_path, cli_index, colour_folder):
    runner = CliRunner()
    base = ["search", "--index", str(cli_index)]
    red = str(colour_folder / "red.png")
    result = runner.invoke(cli, base + [red, "--json", "-k", "3"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["rank"] for r in rows] == [1, 2, 3] and rows[0]["path"] == red
    result = runner.invoke(cli, base + ["--image", red, "--paths-only", "--top", "2"])
    assert result.stdout.splitlines()[0] == red and len(result.stdout.splitlines()) == 2
    result = runner.invoke(cli, base + ["--texts", "a plain blue square", "--paths-only"])
    assert result.stdout.splitlines() == ["a plain blue square", "a plain red square"]
    result = runner.invoke(cli, base + ["red + blue - green:0.5", "-k", "2"])  # a pipe: tab-separated
    assert result.exit_code == 0 and all(len(line.split("\t")) == 3 for line in result.stdout.splitlines())
    import faiss

    faiss.omp_set_num_threads(2)
    result = runner.invoke(cli, base + ["a plain red square", "--precision", "bf16", "--device", "cpu", "-k", "1"])
    assert result.exit_code == 0, result.output
    assert faiss.omp_get_max_threads() == 1  # one query searches on one thread
    sheet = tmp_path / "sheet.html"
    result = runner.invoke(cli, base + ["--image", red, "--html", str(sheet), "-k", "4", "--paths-only"])
    assert result.exit_code == 0 and sheet.read_text().count("data:image/jpeg;base64,") == 4
    # nothing changed: a re-run embeds nothing
    result = runner.invoke(cli, ["index", "--index", str(cli_index), "--workers", "0"])
    assert result.exit_code == 0 and "0 embedded" in result.output


def test_cli_errors_are_one_line(tmp_path, cli_index, other_checkpoint_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["search", "--index", str(tmp_path / "nowhere"), "cat"])
    assert result.exit_code == 2 and "error: no index at" in result.output and "Traceback" not in result.output
    result = runner.invoke(cli, ["search", "--index", str(cli_index), "--checkpoint", str(other_checkpoint_path), "cat"])
    assert result.exit_code == 2 and "was built with model" in result.output
    result = runner.invoke(cli, ["index", str(tmp_path / "missing"), "--index", str(cli_index)])
    assert result.exit_code == 2 and "no such file or folder" in result.output


@pytest.fixture
def other_checkpoint_path(tmp_path_factory, tiny_model_config) -> Path:
    import torch

    from tinymvlm.models.checkpoint import save_checkpoint
    from tinymvlm.models.factory import create_model

    torch.manual_seed(2)
    model, tokenizer = create_model(tiny_model_config)
    path = tmp_path_factory.mktemp("other2") / "other.safetensors"
    save_checkpoint(path, model, tokenizer, {})
    return path


def test_cli_help_does_not_import_heavy_libraries():
    import subprocess
    import sys

    code = ("import sys; from tinymvlm.cli.main import cli\n"
            "heavy = [m for m in ('torch', 'faiss', 'numpy', 'timm', 'transformers') if m in sys.modules]\n"
            "print(','.join(heavy))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_search_on_a_terminal_prints_a_table_of_the_json_results(tmp_path, cli_index, colour_folder):
    """stdout a real terminal (a pty): a rank/score/path table whose rows are the --json hits, with
    rich markup in a file name shown as written."""
    import os
    import re
    import select
    import subprocess
    import sys

    from PIL import Image

    Image.new("RGB", (48, 48), (200, 10, 10)).save(colour_folder / "[bold]red.png")
    assert CliRunner().invoke(cli, ["index", "--index", str(cli_index), "--workers", "0"]).exit_code == 0
    query = ["search", "--index", str(cli_index), "--image", str(colour_folder / "red.png"), "-k", "4"]
    hits = [json.loads(line) for line in CliRunner().invoke(cli, [*query, "--json"]).stdout.splitlines()]
    primary, secondary = os.openpty()
    env = {**os.environ, "COLUMNS": "400", "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "tinymvlm.cli", *query], stdout=secondary, stderr=subprocess.PIPE,
                            env=env)
    os.close(secondary)
    chunks = []
    try:
        while select.select([primary], [], [], 120)[0]:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the terminal closed: the command is done
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
    finally:
        proc.kill()
        os.close(primary)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode())
    cells = [[c.strip() for c in re.split("[\u2500-\u257f]", line) if c.strip()] for line in text.splitlines()]
    cells = [row for row in cells if row]  # rules between header and rows hold box characters alone
    assert cells[0] == ["rank", "score", "path"]
    assert cells[1:] == [[str(h["rank"]), f"{h['score']:.4f}", h["path"]] for h in hits]
    assert str(colour_folder / "[bold]red.png") in {h["path"] for h in hits}
