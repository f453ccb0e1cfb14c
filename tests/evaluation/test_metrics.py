"""Recall@k against a brute-force reference on hand-made similarity matrices."""

from __future__ import annotations

import numpy as np
import pytest

from tinymvlm.errors import TmvError
from tinymvlm.evaluation.recall_at_k import recall_at_k, retrieval_ranks, summarize


def brute_force(sim: np.ndarray, text_image: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Ranks straight from the definition; `sim[j, i]` is caption j's score with image i."""
    n_text, n_image = sim.shape
    t2i = [1 + sum(sim[j, i] > sim[j, text_image[j]] for i in range(n_image)) for j in range(n_text)]
    i2t = []
    for i in range(n_image):
        best = max(sim[j, i] for j in range(n_text) if text_image[j] == i)
        i2t.append(1 + sum(sim[j, i] > best for j in range(n_text)))
    return np.array(t2i), np.array(i2t)


def from_similarity(sim) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings whose product is exactly `sim`: identity images, captions = rows of `sim`."""
    sim = np.asarray(sim, dtype=np.float32)
    return np.eye(sim.shape[1], dtype=np.float32), sim


def test_hand_made_ranks_and_recall():
    # 3 images; image 0 has two captions, image 2 has two.
    sim = [[0.9, 0.1, 0.2],   # caption of 0: rank 1
           [0.3, 0.8, 0.1],   # caption of 0: image 1 higher -> rank 2
           [0.2, 0.4, 0.7],   # caption of 1: image 2 higher -> rank 2
           [0.1, 0.2, 0.3],   # caption of 2: rank 1
           [0.6, 0.5, 0.4]]   # caption of 2: rank 3
    text_image = [0, 0, 1, 2, 2]
    images, texts = from_similarity(sim)
    t2i, i2t = retrieval_ranks(images, texts, text_image)
    assert t2i.tolist() == [1, 2, 2, 1, 3]
    # image 0: best own 0.9 -> rank 1; image 1: own 0.4, higher 0.8, 0.5 -> 3; image 2: best own 0.4, higher 0.7 -> 2
    assert i2t.tolist() == [1, 3, 2]
    m = summarize(t2i, i2t, [1, 2])
    assert m["t2i_R@1"] == pytest.approx(40.0) and m["t2i_R@2"] == pytest.approx(80.0)
    assert m["i2t_R@1"] == pytest.approx(100 / 3) and m["i2t_R@2"] == pytest.approx(200 / 3)
    assert m["t2i_mean_rank"] == pytest.approx(1.8) and m["t2i_median_rank"] == 2
    assert m["i2t_mean_rank"] == pytest.approx(2.0) and m["i2t_median_rank"] == 2


def test_ties_count_in_the_querys_favour():
    sim = [[0.5, 0.5, 0.5],   # all tied: rank 1 whatever the order
           [0.5, 0.5, 0.9],
           [0.2, 0.2, 0.2]]
    images, texts = from_similarity(sim)
    t2i, i2t = retrieval_ranks(images, texts, [2, 1, 0])
    assert t2i.tolist() == [1, 2, 1]
    # image 0: own caption 2 scores 0.2 below two 0.5s -> 3; image 1: own 0.5 ties caption 0 -> 1;
    # image 2: own 0.5, caption 1 scores 0.9 -> 2
    assert i2t.tolist() == [3, 1, 2]


def test_duplicate_caption_hits_only_its_own_image():
    # "a dog" describes images 0 and 1 (identical rows); it prefers image 1.
    sim = [[0.4, 0.6, 0.1],   # "a dog" for image 0: image 1 outranks it -> miss at 1
           [0.4, 0.6, 0.1],   # "a dog" for image 1 -> rank 1
           [0.0, 0.1, 0.9]]
    images, texts = from_similarity(sim)
    t2i, i2t = retrieval_ranks(images, texts, [0, 1, 2])
    assert t2i.tolist() == [2, 1, 1]
    # image 0's own copy ties with image 1's copy: the copy does not push it down
    assert i2t.tolist() == [1, 1, 1]
    assert t2i.tolist() == brute_force(np.array(sim), [0, 1, 2])[0].tolist()


def test_k_larger_than_the_set_is_100_percent():
    images, texts = from_similarity([[0.1, 0.9], [0.9, 0.1]])
    m = recall_at_k(images, texts, [0, 1], ks=[1, 50])
    assert m["t2i_R@1"] == 0 and m["t2i_R@50"] == 100 and m["i2t_R@50"] == 100


@pytest.mark.parametrize("seed", range(6))
def test_random_integer_embeddings_match_brute_force_at_every_chunk_size(seed):
    """Small-integer embeddings make every score exact and ties frequent, with duplicate images
    and duplicate captions, several captions per image and a varying number of them."""
    rng = np.random.default_rng(seed)
    n_images = int(rng.integers(1, 9))
    images = rng.integers(-2, 3, size=(n_images, 3)).astype(np.float32)
    if n_images > 2:
        images[1] = images[0]
    text_image = list(range(n_images)) + rng.integers(0, n_images, size=int(rng.integers(0, 12))).tolist()
    texts = rng.integers(-2, 3, size=(len(text_image), 3)).astype(np.float32)
    if len(texts) > 3:
        texts[-1] = texts[0]
    reference = brute_force(texts.astype(np.float64) @ images.T.astype(np.float64), text_image)
    for chunk in (None, 1, 2, 3, 1000):
        t2i, i2t = retrieval_ranks(images, texts, text_image, chunk=chunk)
        assert t2i.tolist() == reference[0].tolist(), chunk
        assert i2t.tolist() == reference[1].tolist(), chunk


def test_chunked_equals_unchunked_on_unit_vectors():
    rng = np.random.default_rng(7)
    images = rng.standard_normal((300, 16)).astype(np.float32)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    text_image = np.repeat(np.arange(300), 5)
    texts = images[text_image] + 0.8 * rng.standard_normal((1500, 16)).astype(np.float32)
    texts /= np.linalg.norm(texts, axis=1, keepdims=True)
    whole = recall_at_k(images, texts, text_image, ks=[1, 5, 10], chunk=100_000)
    for chunk in (7, 37, None):
        assert recall_at_k(images, texts, text_image, ks=[1, 5, 10], chunk=chunk) == whole
    assert 0 < whole["t2i_R@1"] < whole["t2i_R@10"] < 100


@pytest.mark.parametrize("ks", [[0], [5, -1], []])
def test_bad_k_is_an_error(ks):
    with pytest.raises(TmvError, match="k"):
        summarize(np.array([1]), np.array([1]), ks)


def test_no_pairs_or_orphans_or_nan_are_errors():
    with pytest.raises(TmvError, match="no usable"):
        retrieval_ranks(np.zeros((0, 4)), np.zeros((0, 4)), [])
    with pytest.raises(TmvError, match="every image"):
        retrieval_ranks(np.eye(2), np.eye(2)[:1], [0])
    with pytest.raises(TmvError, match="non-finite"):
        retrieval_ranks(np.eye(2), np.array([[np.nan, 0], [0, 1]]), [0, 1])
