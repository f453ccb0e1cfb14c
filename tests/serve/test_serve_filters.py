"""`/api/search` with a photo library's filters (after, before, folder, min_score) and the page's
relevance cut-off ("cutoff" in the answer), against the CLI and an independent numpy reference."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from helpers.photo_library import PHOTOS, taken_after, write_photos
from helpers.serving import make_service
from starlette.testclient import TestClient
from tinymvlm.index import Index
from tinymvlm.index.query_syntax import parse_query
from tinymvlm.serve.app import create_app
from tinymvlm.serve.service import RELATIVE_CUTOFF
from tinymvlm.serve.thumbnails import ThumbnailCache

from tinymvlm.inference.runtime import Runtime

HOSTS = {"testserver"}


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("library")
    photos = root / "Photos"
    write_photos(photos)
    (photos / "copies").mkdir()
    shutil.copyfile(photos / "trips" / "2019" / "beach.jpg", photos / "copies" / "beach (1).jpg")  # imported twice
    folder = root / "index"
    with Index(folder, checkpoint=tiny_checkpoint, runtime=Runtime(device="cpu")) as index:
        index.add([photos], runtime=Runtime(workers=0, device="cpu"))
    service = make_service(folder)
    client = TestClient(create_app(service, ThumbnailCache(root / "thumbs"), HOSTS))
    yield client, folder, photos
    service.close()


def names(body: dict) -> list[str]:
    return [os.path.basename(r["path"]) for r in body["results"]]


def test_after_through_the_api(served):
    client, _, _ = served
    later = taken_after("2021-01-01")
    three = client.get("/api/search", params={"q": "a dog", "after": "2021-01-01", "k": 3}).json()
    assert len(three["results"]) == 3 and set(names(three)) <= later and three["more"] is True
    every = client.get("/api/search", params={"q": "a dog", "after": "2021-01-01", "k": 9}).json()
    assert set(names(every)) == later and every["more"] is False


def test_before_folder_and_min_score(served):
    client, _, photos = served
    body = client.get("/api/search?q=x&before=2021-01-01&folder=trips&k=9").json()
    assert set(names(body)) == {"beach.jpg", "hill.jpg"}
    body = client.get("/api/search", params=[("q", "x"), ("folder", "trips/2022"), ("folder", str(photos / "home")),
                                             ("k", "9")]).json()
    assert len(body["results"]) == 7
    every = client.get("/api/search?q=a+red+car&k=9").json()["results"]
    floor = (every[1]["score"] + every[2]["score"]) / 2
    cut = client.get("/api/search", params={"q": "a red car", "k": 9, "min_score": f"{floor:.6f}"}).json()
    assert [r["path"] for r in cut["results"]] == [r["path"] for r in every[:2]]


@pytest.mark.parametrize("query, message", [
    ("after=yesterday", "after 'yesterday' is not a date: use YYYY-MM-DD"),
    ("min_score=high", "min_score='high' is not a number"),
    ("min_score=2", "min_score=2 is out of range: scores are cosine similarities, -1..1"),
    ("kind=captions&folder=trips", "date and folder filters apply to image searches, not to captions"),
])
def test_bad_filter_parameters_are_400s(served, query, message):
    client, _, _ = served
    response = client.get(f"/api/search?q=x&{query}")
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_cutoff_is_half_way_from_the_typical_score_to_the_best(served):
    """The reference: every stored vector's score against the query vector, in numpy."""
    client, folder, _ = served
    body = client.get("/api/search?q=a+sunny+beach&k=3").json()
    with Index(folder, runtime=Runtime.for_queries("cpu")) as index:
        query = index.embed_query(parse_query("a sunny beach"))
        catalog = index.searcher().catalog
        with catalog.snapshot():
            vectors = catalog.vectors("images", catalog.ids("images"), len(query))
    scores = vectors @ query
    assert len(scores) == len(PHOTOS) + 1
    expected = np.median(scores) + RELATIVE_CUTOFF * (scores.max() - np.median(scores))
    assert body["cutoff"] == pytest.approx(float(expected), abs=1e-4)
    assert body["results"][0]["score"] == pytest.approx(float(scores.max()), abs=1e-4)


def test_duplicates_and_similar_counts(served):
    """The copy imported twice is one group (same date and size: the first path is kept); once the
    groups are known, search hits carry how many other copies they have."""
    client, _, photos = served
    before = client.get("/api/search?q=x&k=20").json()["results"]
    assert not any("similar" in r for r in before)  # not found yet: no count rather than a wrong one
    groups = client.get("/api/duplicates").json()["groups"]
    copy, original = str(photos / "copies" / "beach (1).jpg"), str(photos / "trips" / "2019" / "beach.jpg")
    assert [(g["paths"], g["keep"]) for g in groups] == [([copy, original], copy)]
    assert groups[0]["similarity"] == pytest.approx(1.0, abs=1e-5) and len(groups[0]["ids"]) == 2
    after = client.get("/api/search?q=x&k=20").json()["results"]
    assert {r["path"]: r.get("similar") for r in after} == {r["path"]: 1 if r["path"] in (copy, original) else None
                                                           for r in after}
