"""Sharded `tmv index` and `--merge`: 2 processes (torchrun, gloo on CPU) or 2 independent `--shard`
jobs give the same index contents as 1 process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from tinymvlm.cli.main import cli
from tinymvlm.index import Index
from tinymvlm.index.catalog import Catalog
from tinymvlm.index.shard import Shard, owner, partition_key
from tinymvlm.index.shard_merge import merge_shards
from tinymvlm.index.store import IndexStore

from tinymvlm.errors import TmvError
from tinymvlm.inference.runtime import Runtime

FAST = Runtime(batch_size=4, workers=0, precision="fp32")  # fp32: bf16 kernels may vary with batch shape
FLAGS = ["--device", "cpu", "--precision", "fp32", "--workers", "0", "--batch-size", "4"]


def contents(folder: Path) -> dict:
    """Everything a search depends on: {path: (hash, vector)}, {caption: vector}, skipped paths."""
    catalog = Catalog(IndexStore(folder).catalog_path, readonly=True)
    try:
        images = {path: (digest, np.frombuffer(blob, np.float32))
                  for path, _, _, digest, blob in (r for rows in catalog.rows("images", 100) for r in rows)}
        captions = {text: np.frombuffer(blob, np.float32)
                    for _, text, blob in (r for rows in catalog.rows("captions", 100) for r in rows)}
        skipped = {r[0] for rows in catalog.rows("skipped", 100) for r in rows}
        return {"images": images, "captions": captions, "skipped": skipped}
    finally:
        catalog.close()


def scores(folder: Path, queries: list[Path], checkpoint: Path) -> list[dict[str, float]]:
    """{path: score} of every image for each query image: the same for both indexes means the same
    ranking, up to the order of near-ties (a PNG and a JPEG of one colour, byte-identical copies)."""
    with Index(folder, checkpoint=checkpoint, runtime=Runtime("cpu", "fp32")) as idx:
        n = idx.info()["counts"]["images"]
        hits = [idx.search(image=q, k=n) for q in queries]
    assert all(hs[0].score == pytest.approx(1.0, abs=1e-3) for hs in hits)  # each query finds itself
    return [{h.path: h.score for h in hs} for hs in hits]


def assert_same_index(got: Path, expected: Path, queries: list[Path], checkpoint: Path, atol: float = 1e-3) -> None:
    """The same (path, hash, vector) rows, captions, skipped files, counts and search results. Vectors
    agree to float tolerance only: batch shapes and thread counts change the order of float sums."""
    a, b = contents(got), contents(expected)
    assert {p: h for p, (h, _) in a["images"].items()} == {p: h for p, (h, _) in b["images"].items()}
    for path, (_, vec) in b["images"].items():
        np.testing.assert_allclose(a["images"][path][1], vec, atol=atol)
    assert a["captions"].keys() == b["captions"].keys()
    for text, vec in b["captions"].items():
        np.testing.assert_allclose(a["captions"][text], vec, atol=atol)
    assert a["skipped"] == b["skipped"]
    for hits_a, hits_b in zip(scores(got, queries, checkpoint), scores(expected, queries, checkpoint)):
        assert hits_a.keys() == hits_b.keys()
        np.testing.assert_allclose([hits_a[p] for p in hits_b], list(hits_b.values()), atol=atol)
    manifest = IndexStore(got).read_manifest()
    assert manifest["counts"] == IndexStore(expected).read_manifest()["counts"]
    assert manifest["indexes"]["images"]["count"] == len(b["images"])


@pytest.fixture
def collection(tmp_path, colour_folder) -> tuple[Path, Path]:
    """Colour squares, a nested folder, a byte-identical copy, a non-UTF-8 name, an undecodable file,
    and captions."""
    from conftest import make_colour_images

    make_colour_images(colour_folder / "nested" / "deeper", fmt="jpg")
    shutil.copy(colour_folder / "black.png", colour_folder / "black copy.png")
    (colour_folder / "broken.png").write_bytes(b"not an image")
    Image.new("RGB", (48, 48), (120, 60, 0)).save(os.fsdecode(os.fsencode(colour_folder) + b"/caf\xe9.png"))
    captions = tmp_path / "captions.txt"
    captions.write_text("".join(p.read_text() for p in sorted(colour_folder.glob("*.txt"))), encoding="utf-8")
    return colour_folder, captions


def test_partition_is_complete_stable_and_balanced():
    roots = ["/data/a", "/data/b"]
    paths = [f"/data/{r}/{d}/img{i:04d}.jpg" for r in "ab" for d in ("x", "y") for i in range(500)]
    shards = [Shard(i, 3) for i in range(3)]
    owned = [[p for p in paths if s.owns(roots)(p)] for s in shards]
    assert sorted(sum(owned, [])) == sorted(paths)  # every file in exactly one shard
    assert all(600 < len(o) < 734 for o in owned)  # 2000 files over 3 shards: near a third each
    # the key is the path below its root: the same split wherever the collection is mounted,
    # and unaffected by other files
    assert partition_key("/data/a/x/img0001.jpg", roots) == "x/img0001.jpg"
    assert owner("x/img0001.jpg", 3) == [s.index for s in shards if s.owns(["/mnt/a"])("/mnt/a/x/img0001.jpg")][0]
    assert partition_key("/data/a", ["/data/a"]) == "a"


@pytest.mark.parametrize("text, message", [("3/2", "does not exist"), ("2/2", "does not exist"), ("0/0", "does not exist"),
                                           ("a/b", "takes I/N"), ("1", "takes I/N"), ("-1/2", "takes I/N")])
def test_bad_shard_syntax_is_a_clear_error(text, message):
    with pytest.raises(TmvError, match=message):
        Shard.parse(text)
    result = CliRunner().invoke(cli, ["index", ".", "--shard", text])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_independent_shards_merge_to_the_one_process_index(tmp_path, collection, tiny_checkpoint):
    images, captions = collection
    reference = tmp_path / "one"
    Index(reference, checkpoint=tiny_checkpoint).add([images], captions=[captions], runtime=FAST)
    out = tmp_path / "sharded"
    reports = [Index(Shard(i, 2).folder(out), checkpoint=tiny_checkpoint).add(
        [images], captions=[captions], runtime=FAST, shard=Shard(i, 2)) for i in range(2)]
    assert sum(r.scanned for r in reports) == 19 and all(r.embedded for r in reports)  # each did its share only
    assert [r.captions_embedded for r in reports] == [8, 0]  # captions: shard 0's job
    report = merge_shards([Shard(i, 2).folder(out) for i in (1, 0)], out)  # any order: same result
    assert report.shards == 2 and report.counts == {"images": 18, "captions": 8, "skipped": 1}
    queries = [images / "black.png", images / "red.png", images / "nested" / "deeper" / "green.jpg"]
    assert_same_index(out, reference, queries, tiny_checkpoint)

    # a merged index is a normal one: a plain re-scan finds everything up to date
    again = Index(out, checkpoint=tiny_checkpoint).add(runtime=FAST)
    assert (again.unchanged, again.embedded, again.removed) == (18, 0, 0)

    # shards stay incremental: a new file is embedded by its shard alone; re-merging replaces the output
    Image.new("RGB", (48, 48), (90, 200, 200)).save(images / "teal.png")
    Index(reference, checkpoint=tiny_checkpoint).add([images], runtime=FAST)
    embedded = [Index(Shard(i, 2).folder(out), checkpoint=tiny_checkpoint).add(runtime=FAST, shard=Shard(i, 2)).embedded
                for i in range(2)]
    assert sorted(embedded) == [0, 1]
    result = CliRunner().invoke(cli, ["index", "--merge", "--index", str(out)])  # finds out/shards/*-of-2
    assert result.exit_code == 0, result.output
    assert "merged 2 shards" in result.output and "19 images" in result.output
    assert_same_index(out, reference, queries, tiny_checkpoint)


@pytest.mark.parametrize("launcher", [["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                                       "-m", "tinymvlm.cli", "index"],
                                      ["-m", "tinymvlm.cli", "index", "--nproc", "2"]], ids=["torchrun", "nproc"])
def test_two_torchrun_processes_give_the_one_process_index(tmp_path, collection, tiny_checkpoint, launcher):
    """torchrun itself, and `tmv index --nproc 2` (torchrun's machinery started by tmv)."""
    images, captions = collection
    reference = tmp_path / "one"
    Index(reference, checkpoint=tiny_checkpoint).add([images], captions=[captions], runtime=FAST)
    out = tmp_path / "two"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", COLUMNS="200")
    result = subprocess.run(
        [sys.executable, *launcher, str(images), "--index", str(out), "--checkpoint", str(tiny_checkpoint),
         "--captions", str(captions), *FLAGS],
        env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "shard 0/2: images:" in result.stderr and "shard 1/2: images:" in result.stderr
    assert "merged 2 shards" in result.stderr
    for i in range(2):
        assert IndexStore(Shard(i, 2).folder(out)).read_manifest()["shard"] == {"index": i, "count": 2}
    assert IndexStore(out).read_manifest()["merged"]["shards"] == 2
    assert_same_index(out, reference, [images / "black.png", images / "nested" / "deeper" / "blue.jpg"], tiny_checkpoint)


def test_a_failing_index_under_nproc_is_one_line(tmp_path, colour_folder):
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", COLUMNS="200")
    absent = tmp_path / "absent.safetensors"
    result = subprocess.run([sys.executable, "-m", "tinymvlm.cli", "index", "--nproc", "2", str(colour_folder),
                             "--index", str(tmp_path / "idx"), "--checkpoint", str(absent), *FLAGS],
                            env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: checkpoint {absent} does not exist"


def test_shards_embedded_on_a_gpu_merge_to_the_one_process_index(tmp_path, collection, tiny_checkpoint):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    images, captions = collection
    gpu = Runtime(batch_size=4, workers=0, device="cuda", precision="fp32")
    reference = tmp_path / "one"
    Index(reference, checkpoint=tiny_checkpoint, runtime=gpu).add([images], captions=[captions], runtime=gpu)
    out = tmp_path / "sharded"
    for i in range(2):
        Index(Shard(i, 2).folder(out), checkpoint=tiny_checkpoint, runtime=gpu).add(
            [images], captions=[captions], runtime=gpu, shard=Shard(i, 2))
    merge_shards([Shard(i, 2).folder(out) for i in range(2)], out)
    assert_same_index(out, reference, [images / "red.png"], tiny_checkpoint, atol=2e-3)  # TF32 convolutions


def test_merge_and_shard_refuse_what_would_lose_or_mix_vectors(tmp_path, colour_folder, tiny_checkpoint,
                                                              other_checkpoint):
    out = tmp_path / "idx"
    s0, s1, s1_of_3 = Shard(0, 2), Shard(1, 2), Shard(1, 3)
    Index(s0.folder(out), checkpoint=tiny_checkpoint).add([colour_folder], runtime=FAST, shard=s0)
    Index(s1.folder(out), checkpoint=other_checkpoint).add([colour_folder], runtime=FAST, shard=s1)
    Index(s1_of_3.folder(out), checkpoint=tiny_checkpoint).add([colour_folder], runtime=FAST, shard=s1_of_3)
    plain = tmp_path / "plain"
    Index(plain, checkpoint=tiny_checkpoint).add([colour_folder], runtime=FAST)

    def refused(shards, message, target=out, **kw):
        with pytest.raises(TmvError, match=message):
            merge_shards(shards, target, **kw)

    refused([s0.folder(out)], r"shard\(s\) 1/2 missing")
    refused([s0.folder(out), s0.folder(out)], "given twice")
    refused([s0.folder(out), s1_of_3.folder(out)], "split the work 2 and 3 ways")
    refused([s0.folder(out), s1.folder(out)], "different models")
    refused([s0.folder(out), plain], "is not a shard")
    refused([s0.folder(out), tmp_path / "nowhere"], "no index at")
    assert not (tmp_path / "nowhere").exists()
    impostor = tmp_path / "impostor"  # shard 0's files under shard 1's name: the same paths twice
    shutil.copytree(s0.folder(out), impostor)
    store = IndexStore(impostor)
    store.write_manifest({**store.read_manifest(), "shard": {"index": 1, "count": 2}})
    refused([s0.folder(out), impostor], "is in two shards")
    # shards over other folders would not fit together
    Index(s1.folder(out), checkpoint=tiny_checkpoint).add([colour_folder, tmp_path / "idx" / "shards"],
                                                         rebuild=True, runtime=FAST, shard=s1)
    refused([s0.folder(out), s1.folder(out)], "indexed different folders")
    Index(s1.folder(out), checkpoint=tiny_checkpoint).add([colour_folder], rebuild=True, runtime=FAST, shard=s1)
    # never replace an index that was not made by merging, unless asked to
    refused([s0.folder(out), s1.folder(out)], "not made by merging", target=plain)
    assert merge_shards([s0.folder(out), s1.folder(out)], plain, replace=True).counts["images"] == 8
    # a shard is only ever updated as that shard
    with pytest.raises(TmvError, match="is shard 0/2 of a sharded index"):
        Index(s0.folder(out), checkpoint=tiny_checkpoint).add([colour_folder], runtime=FAST)
    with pytest.raises(TmvError, match="holds shard 0/2, not shard 1/2"):
        Index(s0.folder(out), checkpoint=tiny_checkpoint).add([colour_folder], runtime=FAST, shard=s1)
    # several shard counts under INDEX/shards: the CLI asks which to merge
    result = CliRunner().invoke(cli, ["index", "--merge", "--index", str(out)])
    assert result.exit_code == 2 and "holds shards of 2 and 3 processes" in result.output
    result = CliRunner().invoke(cli, ["index", str(colour_folder), "--shard", "0/2", "--merge"])
    assert result.exit_code == 2 and "one of --shard, --merge" in result.output


@pytest.mark.parametrize("failing", [0, 1])
def test_index_nproc_reports_the_one_process_that_failed_whichever_it_is(tmp_path, colour_folder, tiny_checkpoint,
                                                                          failing):
    """One process fails (its shard folder holds a broken manifest), the other is stopped by the
    launcher or loses its partner: the one line is the failing process's error, whichever rank."""
    out = tmp_path / "idx"
    broken = Shard(failing, 2).folder(out)
    broken.mkdir(parents=True)
    (broken / "manifest.json").write_text("{not json", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", COLUMNS="200")
    result = subprocess.run([sys.executable, "-m", "tinymvlm.cli", "index", "--nproc", "2", str(colour_folder),
                             "--index", str(out), "--checkpoint", str(tiny_checkpoint), *FLAGS],
                            env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 2, result.stderr
    # besides the model line and progress lines, one error: the failing process's
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert errors[0].startswith(f"error: index manifest {broken / 'manifest.json'} is unreadable"), result.stderr


def test_a_merge_killed_midway_or_in_its_sync_leaves_loadable_files_and_merges_again(tmp_path, collection,
                                                                                     tiny_checkpoint):
    """SIGKILL at two kill points of `tmv index --merge` (TMV_KILL_AT, events in the merging process):
    after shard 0 of 2 was copied into the open transaction, and with the merged images' FAISS file
    written but not renamed. Each time every file that exists loads and the catalogue holds no half
    merge; the next merge gives the one-process index and removes the stale temp file."""
    images, captions = collection
    reference = tmp_path / "one"
    Index(reference, checkpoint=tiny_checkpoint).add([images], captions=[captions], runtime=FAST)
    out = tmp_path / "sharded"
    for i in range(2):
        Index(Shard(i, 2).folder(out), checkpoint=tiny_checkpoint).add([images], captions=[captions], runtime=FAST,
                                                                       shard=Shard(i, 2))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    store = IndexStore(out)
    for point, rows, temp in (("merge shard 0", 0, None), ("images.*.faiss", len(contents(reference)["images"]), ".images.")):
        killed = subprocess.run([sys.executable, "-m", "tinymvlm.cli", "index", "--merge", "--index", str(out)],
                                env={**env, "TMV_KILL_AT": point}, capture_output=True, text=True, timeout=240)
        assert killed.returncode == -9, killed.stderr
        manifest = store.read_manifest()
        assert manifest["merged"]["shards"] == 2
        for kind, entry in manifest["indexes"].items():
            store.load_faiss(manifest, kind)
        catalog = Catalog(store.catalog_path, readonly=True)
        try:
            assert catalog.count("images") == rows  # all of the merge or none of it
        finally:
            catalog.close()
        temps = [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
        assert temps == [] if temp is None else len(temps) == 1 and temps[0].startswith(temp), (point, temps)
    result = CliRunner().invoke(cli, ["index", "--merge", "--index", str(out)])
    assert result.exit_code == 0, result.output
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    assert_same_index(out, reference, [images / "black.png"], tiny_checkpoint)


def test_a_merge_refuses_a_locked_shard_or_output_and_writes_nothing(tmp_path, colour_folder, tiny_checkpoint):
    """The merge takes the output's lock and every shard's: a shard or output being written by another
    `tmv index` is refused by PID (nothing written), and the merge succeeds once it is free."""
    from tinymvlm.index.writer_lock import IndexLock

    out = tmp_path / "sharded"
    for i in range(2):
        Index(Shard(i, 2).folder(out), checkpoint=tiny_checkpoint).add([colour_folder], runtime=FAST, shard=Shard(i, 2))
    for held in (Shard(1, 2).folder(out), out):
        with IndexLock(held):
            with pytest.raises(TmvError, match=f"index {held} is locked by PID {os.getpid()}"):
                merge_shards([], out)
        assert not IndexStore(out).exists()
    assert merge_shards([], out).counts["images"] == 8
