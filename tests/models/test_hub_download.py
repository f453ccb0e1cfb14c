"""`hf:ORG/NAME` and `open_clip:ARCH/TAG` downloaded from a loopback hub (helpers/hubserver.py) that serves
tiny random CLIP and SigLIP folders (helpers/pretrained_models.py) in the hub's HTTP layout: the first use
shows a progress bar, downloads and imports into the tmv cache, later uses work offline; a dropped
connection and a killed process are resumed with a Range request; a corrupted or truncated file and a
missing repo are one-line errors. Every command runs as a new process, as a user runs it, with
HF_ENDPOINT, HF_HOME and XDG_CACHE_HOME of its own; nothing reaches the internet. Kill points are the
server's events (`cut`, `held`), never sleeps.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.hubserver import Fault, HubServer
from helpers.pretrained_models import OPEN_CLIP_ARCH, OPEN_CLIP_CONFIG, save_hf_clip, save_hf_siglip, save_open_clip

open_clip = pytest.importorskip("open_clip", reason="open_clip:ARCH/TAG needs the open_clip extra")


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory) -> Path:
    """org/tiny-clip, org/tiny-siglip (HF folders) and timm/tiny-oc (an open_clip hf-hub repo)."""
    root = tmp_path_factory.mktemp("hub")
    save_hf_clip(root / "org" / "tiny-clip")
    save_hf_siglip(root / "org" / "tiny-siglip")
    oc = root / "timm" / "tiny-oc"
    oc.mkdir(parents=True)
    weights = save_open_clip(tmp_path_factory.mktemp("oc"))
    (oc / "open_clip_model.safetensors").write_bytes(weights.read_bytes())
    return root


@pytest.fixture
def hub(hub_root):
    with HubServer(hub_root) as server:
        yield server


@pytest.fixture
def env(tmp_path, hub) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"), XDG_CACHE_HOME=str(tmp_path / "cache"),
               HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false", COLUMNS="200",
               PYTHONPATH=os.pathsep.join([p for p in sys.path if p]))
    return env


@pytest.fixture
def photos(tmp_path) -> Path:
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    for name, rgb in {"red": (220, 20, 20), "green": (20, 220, 20), "blue": (20, 20, 220)}.items():
        Image.new("RGB", (40, 40), rgb).save(folder / f"{name}.png")
    return folder


def tmv(env: dict, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tinymvlm.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def load(env: dict, ref: str) -> subprocess.CompletedProcess:
    code = f"import tinymvlm; m, p, t = tinymvlm.load({ref!r}); print('EMBED', m.embed_dim)"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def imported(env: dict) -> list[Path]:
    return sorted((Path(env["XDG_CACHE_HOME"]) / "tinymvlm" / "models").glob("*.safetensors"))


def downloads(env: dict) -> Path:
    return Path(env["XDG_CACHE_HOME"]) / "tinymvlm" / "downloads"


def one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """A failing command says why in one line, `error: ...`, and nothing else on stderr/stdout."""
    assert result.returncode != 0, result.stdout + result.stderr
    text = (result.stdout + result.stderr).strip()
    errors = [line for line in text.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in text, text[-3000:]
    for fragment in fragments:
        assert fragment.lower() in errors[0].lower(), errors[0]
    return errors[0]


# -------------------------------------------------------------------------------- first use, offline


@pytest.mark.parametrize("name", ["tiny-clip", "tiny-siglip"])
def test_first_use_downloads_and_imports_then_works_offline(env, hub, photos, tmp_path, name):
    ref = f"hf:org/{name}"
    result = tmv(env, "index", str(photos), "--index", str(tmp_path / "index"), "--model", ref)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(imported(env)) == 1, "imported once into the tmv model cache"
    assert hub.gets("/model.safetensors"), "the weights came from the loopback hub"
    assert "importing" in result.stdout + result.stderr
    assert f"model: {ref} (--model)" in result.stderr
    assert not list(downloads(env).rglob("*")), "the fetched files go once the tmv checkpoint is written"
    seen = len(hub.requests)
    offline = dict(env, HF_HUB_OFFLINE="1")
    again = load(offline, ref)
    assert again.returncode == 0 and "EMBED" in again.stdout, again.stderr[-3000:]
    hits = tmv(offline, "search", "a red square", "--index", str(tmp_path / "index"), "--json", "-k", "2")
    assert hits.returncode == 0 and len(hits.stdout.splitlines()) == 2, hits.stderr[-3000:]
    assert len(hub.requests) == seen, "nothing asked of the hub offline"


def test_a_download_reports_progress(env, hub, photos, tmp_path):
    """The user sees the download (its size) on stderr, through the CLI's progress bar; a library call
    stays quiet."""
    import re

    result = tmv(env, "index", str(photos), "--index", str(tmp_path / "index"), "--model", "hf:org/tiny-clip")
    assert result.returncode == 0, result.stderr[-3000:]
    total = sum(p.stat().st_size for p in (hub.root / "org/tiny-clip").iterdir()) / 1000
    shown = re.search(r"downloading hf:org/tiny-clip .* ([\d.]+)/([\d.]+) kB", result.stderr)
    assert shown and shown.group(1) == shown.group(2), result.stderr[-2000:]
    assert float(shown.group(2)) == pytest.approx(total, abs=0.1)  # every file of the folder is one an import reads
    quiet = load(dict(env, XDG_CACHE_HOME=str(tmp_path / "other-cache")), "hf:org/tiny-clip")
    assert quiet.returncode == 0 and "downloading" not in quiet.stderr, quiet.stderr[-2000:]


def test_open_clip_pretrained_tag_downloads_from_the_hub(env, hub, hub_root, tmp_path):
    """open_clip:ARCH/TAG fetches the tag's hf_hub file (open_clip.pretrained.download_pretrained_from_hf
    -> hf_hub_download(repo, 'open_clip_model.safetensors' then 'open_clip_pytorch_model.bin')). The
    tiny arch and tag are registered in the child as a user's own config would be."""
    code = f"""
import open_clip, json, pathlib, tinymvlm
from open_clip import pretrained
p = pathlib.Path({str(tmp_path / (OPEN_CLIP_ARCH + ".json"))!r}); p.write_text(json.dumps({OPEN_CLIP_CONFIG!r}))
open_clip.add_model_config(p)
pretrained._PRETRAINED[{OPEN_CLIP_ARCH!r}] = {{"hubtag": pretrained._pcfg(hf_hub="timm/tiny-oc/")}}
m, _, _ = tinymvlm.load("open_clip:{OPEN_CLIP_ARCH}/hubtag"); print("EMBED", m.embed_dim)
"""
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "EMBED 16" in result.stdout, result.stderr[-3000:]
    assert [r for r in hub.gets("/open_clip_model.safetensors") if r[1].startswith("/timm/tiny-oc/resolve/")]


# ------------------------------------------------------------------------------------- interruption


def test_a_dropped_download_resumes_with_a_range_request(env, hub, tmp_path):
    """The server closes the connection after 100 kB of the weights, once: the download goes on from
    there (a Range request) and the model loads."""
    size = (hub.root / "org/tiny-clip/model.safetensors").stat().st_size
    hub.faults["org/tiny-clip/model.safetensors"] = Fault(cut_after=min(100_000, size // 2), times=1)
    result = load(env, "hf:org/tiny-clip")
    assert hub.cut.is_set(), "the kill point was reached"
    assert result.returncode == 0 and "EMBED" in result.stdout, result.stderr[-3000:]
    ranges = [r for r in hub.gets("/model.safetensors") if r[2]]
    assert ranges and ranges[0][2] == f"bytes={min(100_000, size // 2)}-", hub.gets("/model.safetensors")
    assert len(imported(env)) == 1


def test_a_download_that_keeps_failing_fails_in_one_line_then_a_rerun_succeeds(env, hub, photos, tmp_path):
    """Every attempt is cut (the library gives up after its retries): one line, nothing imported, no
    index; the next run, with the hub healthy again, downloads and imports."""
    hub.faults["org/tiny-clip/model.safetensors"] = Fault(cut_after=0)  # no byte of the weights ever comes
    index = tmp_path / "index"
    result = tmv(env, "index", str(photos), "--index", str(index), "--model", "hf:org/tiny-clip")
    assert hub.cut.is_set()
    one_line_error(result, "org/tiny-clip")
    assert not imported(env) and not index.exists()
    del hub.faults["org/tiny-clip/model.safetensors"]
    again = tmv(env, "index", str(photos), "--index", str(index), "--model", "hf:org/tiny-clip")
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(imported(env)) == 1


def test_a_process_killed_mid_download_then_a_rerun_resumes(env, hub, tmp_path):
    """A process killed while the weights download (the server sends N bytes and holds the connection;
    the client kills itself at its kill point once it has written what came); the rerun asks only for
    the rest, with a Range request from where the part file ends."""
    path = "org/tiny-clip/model.safetensors"
    size = (hub.root / path).stat().st_size
    hub.faults[path] = Fault(hold_after=size // 2, times=1)
    killed = load(dict(env, TMV_KILL_AT="download model.safetensors"), "hf:org/tiny-clip")
    hub.release.set()
    assert killed.returncode == -9, killed.stderr[-3000:]
    parts = [p.stat().st_size for p in downloads(env).rglob("model.safetensors.part")]
    assert len(parts) == 1 and 0 < parts[0] <= size // 2, parts
    asked = len(hub.gets("/model.safetensors"))
    result = load(env, "hf:org/tiny-clip")
    assert result.returncode == 0 and "EMBED" in result.stdout, result.stderr[-3000:]
    assert [r[2] for r in hub.gets("/model.safetensors")[asked:]] == [f"bytes={parts[0]}-"]
    assert len(imported(env)) == 1


# --------------------------------------------------------------------------------- corrupted files


@pytest.mark.parametrize("fault", ["corrupt", "truncate"])
def test_a_corrupted_download_is_refused_in_one_line(env, hub, photos, tmp_path, fault):
    """Wrong bytes of the right size, or a file cut short with headers that agree: the sha256 the hub
    names (the LFS ETag) does not match, so the download is refused in one line and nothing is
    imported or indexed (today: huggingface_hub checks sizes only)."""
    path = "org/tiny-clip/model.safetensors"
    size = (hub.root / path).stat().st_size
    hub.faults[path] = Fault(corrupt=True) if fault == "corrupt" else Fault(truncate=size // 2)
    index = tmp_path / "index"
    result = tmv(env, "index", str(photos), "--index", str(index), "--model", "hf:org/tiny-clip")
    line = one_line_error(result, "org/tiny-clip")
    assert any(word in line.lower() for word in ("checksum", "sha256", "corrupt", "incomplete", "truncated")), line
    assert not imported(env) and not index.exists()
    assert not list(downloads(env).rglob("model.safetensors")), "no bad file is kept for the next run to trust"
    del hub.faults[path]
    again = tmv(env, "index", str(photos), "--index", str(index), "--model", "hf:org/tiny-clip")
    assert again.returncode == 0 and len(imported(env)) == 1, again.stderr[-3000:]


# ------------------------------------------------------------------------------------- missing repo


@pytest.mark.parametrize("command", ["index", "load"])
def test_a_missing_repo_is_one_line(env, hub, photos, tmp_path, command):
    if command == "index":
        result = tmv(env, "index", str(photos), "--index", str(tmp_path / "index"), "--model", "hf:org/no-such-model")
    else:
        code = ("import sys, tinymvlm\nfrom tinymvlm.errors import TmvError\ntry:\n tinymvlm.load('hf:org/no-such-model')\n"
                "except TmvError as e:\n print('error:', e); sys.exit(2)")
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    line = one_line_error(result, "org/no-such-model")
    assert "not found" in line.lower() or "no such" in line.lower() or "does not exist" in line.lower(), line
    assert any("/api/models/org/no-such-model" in r[1] or "org/no-such-model/resolve" in r[1] for r in hub.requests)
    assert not imported(env)
