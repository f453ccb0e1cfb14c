"""`tmv serve` links the training curves of the run whose model the index uses, and only such a run's."""

from __future__ import annotations

import json
import shutil

from helpers.serving import build_index, make_service
from starlette.testclient import TestClient
from tinymvlm.serve.app import create_app
from tinymvlm.serve.thumbnails import ThumbnailCache
from tinymvlm.training.curves import draw_curves

HOSTS = {"testserver"}


def _client(root, checkpoint):
    folder, _ = build_index(root, checkpoint, captions=False)
    service = make_service(folder)
    return TestClient(create_app(service, ThumbnailCache(root / "thumbs"), HOSTS)), service


def test_a_run_model_links_its_curves(tmp_path, tiny_checkpoint):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tiny_checkpoint, run / "best.safetensors")
    lines = [{"type": "step", "step": s, "epoch": 1, "loss": 2.0 - s / 10, "lr": 1e-3} for s in (1, 2, 3)]
    lines.append({"type": "epoch", "step": 3, "epoch": 1, "train_loss": 1.9, "pairs_per_s": 10.0})
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    drawn = draw_curves(run)
    client, service = _client(tmp_path, run / "best.safetensors")
    try:
        assert client.get("/api/info").json()["curves"] == "/api/curves"
        answer = client.get("/api/curves")
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
        assert answer.content == drawn.read_bytes()
    finally:
        service.close()


def test_a_model_outside_a_run_has_no_curves(tmp_path, tiny_checkpoint):
    client, service = _client(tmp_path, tiny_checkpoint)
    try:
        assert client.get("/api/info").json()["curves"] is None
        answer = client.get("/api/curves")
        assert answer.status_code == 404 and "no training curves" in answer.json()["error"]
    finally:
        service.close()
