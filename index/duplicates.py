"""Near-duplicate groups among the indexed images: the same photo resized, re-compressed, cropped a
little, brightened, stamped with a date or turned a few degrees.

Two checks, because one is not enough: the stored embeddings (no re-embedding) find candidate pairs by a
FAISS range search (vectors.range_pairs), but an embedding says what a photo shows, so two dogs or two
SUVs can score as high as a photo and its edited copy (the built-in model gives two different drum kits
0.99). Each candidate pair is then compared by looks: 12x12 colour thumbnails, mean-centred and
normalised (so brightening and re-compression barely change them), of one picture whole against crops
of the other (so a cropped or slightly turned copy lines up with one of them), the best correlation
counting. Only the candidate pairs' files are decoded, once each. Accepted pairs join into groups by
average linkage (_link_groups). Nothing is ever deleted: a group names the copy
to keep (the largest in pixels, then the oldest, then the first path) and leaves the choice to the user.
Thresholds measured on real photos: benchmarks/bench_dupes.py, docs/photo-library.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from tinymvlm.index import vectors
from tinymvlm.index.catalog import Catalog

DEFAULT_THRESHOLD = 0.60  # embedding cosine similarity of a candidate pair
LOOK_THRESHOLD = 0.75  # thumbnail correlation of an accepted pair, at the best of the alignments tried
LINK_SHARE = 0.5  # two groups join when at least this share of the pairs between them were accepted
THUMB = 12  # the signature's side, in cells
SCALES = (1.0, 0.92, 0.85)  # the crops of each picture tried against the other's whole picture
DECODE_SIDE = 96


@dataclass(frozen=True)
class DuplicateGroup:
    ids: list[int]
    paths: list[str]  # the copy to keep first, the rest in the same order (pixels, then age, then path)
    similarity: float  # the lowest embedding similarity of the pairs that joined the group

    @property
    def keep(self) -> str:
        return self.paths[0]

    def to_dict(self) -> dict:
        return {"paths": self.paths, "keep": self.keep, "similarity": round(self.similarity, 4)}


def _crop_boxes(width: int, height: int) -> list[tuple[float, float, float, float]]:
    """The whole picture, then crops of it at each smaller scale in SCALES, at 3x3 positions."""
    boxes = [(0.0, 0.0, float(width), float(height))]
    for scale in SCALES[1:]:
        w, h = width * scale, height * scale
        boxes += [((width - w) * fx, (height - h) * fy, (width - w) * fx + w, (height - h) * fy + h)
                  for fx in (0, 0.5, 1) for fy in (0, 0.5, 1)]
    return boxes


def thumbnail_signature(path: str) -> np.ndarray | None:
    """The file's look: one unit vector (12x12 RGB, mean removed) per crop of _crop_boxes, the whole
    picture first (float16 rows); None if it cannot be decoded, or is one flat colour."""
    from PIL import Image

    from tinymvlm.data.transform import load_image

    try:
        image = load_image(path, draft_size=(DECODE_SIDE, DECODE_SIDE))
        image.thumbnail((DECODE_SIDE, DECODE_SIDE), Image.Resampling.BOX)
    except Exception:  # gone, unreadable or undecodable since it was indexed: not confirmed a duplicate
        return None
    rows = []
    for box in _crop_boxes(*image.size):
        pixels = np.asarray(image.resize((THUMB, THUMB), Image.Resampling.BOX, box=box), dtype=np.float32).reshape(-1)
        pixels -= pixels.mean()
        norm = float(np.linalg.norm(pixels))
        if norm <= 1e-3 * len(pixels):
            return None
        rows.append(pixels / norm)
    return np.stack(rows).astype(np.float16)


def look_alike(first: np.ndarray | None, second: np.ndarray | None) -> float:
    """How alike two pictures look: the best correlation of either one's whole picture with a crop of the
    other (a cropped or turned copy lines up with one of them); 0 when either is missing."""
    if first is None or second is None:
        return 0.0
    a, b = first.astype(np.float32), second.astype(np.float32)
    return float(max((a @ b[0]).max(), (b @ a[0]).max()))


def _link_groups(firsts: np.ndarray, seconds: np.ndarray) -> list[list[int]]:
    """Groups of the accepted pairs' nodes by average linkage: start from single nodes and keep joining
    the two groups with the largest share of accepted pairs between them, while that share is at least
    LINK_SHARE. Unlike connected components, one stray pair between two groups of look-alikes (two cut-out
    tools on white, each with its copies) does not chain them into one."""
    import heapq

    members: dict[int, list[int]] = {}
    links: dict[int, dict[int, int]] = {}
    for a, b in zip(firsts.tolist(), seconds.tolist()):
        for x, y in ((a, b), (b, a)):
            members.setdefault(x, [x])
            links.setdefault(x, {})[y] = links.setdefault(x, {}).get(y, 0) + 1

    def share(a: int, b: int) -> float:
        return links[a][b] / (len(members[a]) * len(members[b]))

    heap = [(-share(a, b), a, b) for a in links for b in links[a] if a < b]
    heapq.heapify(heap)
    while heap:
        negative, a, b = heapq.heappop(heap)
        if a not in members or b not in members or b not in links[a] or share(a, b) != -negative:
            continue  # merged away, or a stale entry: a newer one holds the current share
        if -negative < LINK_SHARE:
            break
        members[a] += members.pop(b)
        for other, count in links.pop(b).items():
            if other != a:
                del links[other][b]
                links[other][a] = links[a][other] = links[a].get(other, 0) + count
        del links[a][b]
        for other in links[a]:
            heapq.heappush(heap, (-share(a, other), min(a, other), max(a, other)))
    return [sorted(group) for group in members.values() if len(group) > 1]


def find_duplicates(catalog: Catalog, dim: int, threshold: float = DEFAULT_THRESHOLD,
                    look_threshold: float = LOOK_THRESHOLD, workers: int = 4,
                    on_decoded: Callable[[int, int], None] | None = None) -> list[DuplicateGroup]:
    """Groups of near-duplicate images, largest first. `on_decoded(done, total)` follows the decoding."""
    with catalog.snapshot():
        parts = list(catalog.iter_vectors("images", dim))
    if not parts:
        return []
    ids = np.concatenate([p[0] for p in parts])
    vecs = np.concatenate([p[1] for p in parts])
    firsts, seconds, sims = vectors.range_pairs(vecs, threshold)
    if not len(firsts):
        return []
    involved = np.unique(np.concatenate([firsts, seconds]))
    with catalog.snapshot():
        labels = catalog.labels("images", ids[involved].tolist())
        details = catalog.photo_details(ids[involved].tolist())
    looks = _signatures([labels.get(int(ids[p])) for p in involved], workers, on_decoded)
    look_of = dict(zip(involved.tolist(), looks))
    accepted = np.array([look_alike(look_of[int(a)], look_of[int(b)]) >= look_threshold
                         for a, b in zip(firsts, seconds)], dtype=bool)
    firsts, seconds, sims = firsts[accepted], seconds[accepted], sims[accepted]
    if not len(firsts):
        return []
    lowest: dict[int, float] = {}
    groups = []
    for members in _link_groups(firsts, seconds):
        member_ids = [int(ids[p]) for p in members]
        ordered = sorted(member_ids, key=lambda i: _keep_order(i, labels, details))
        groups.append((members, ordered))
    in_group = {p: n for n, (members, _) in enumerate(groups) for p in members}
    for a, b, sim in zip(firsts.tolist(), seconds.tolist(), sims.tolist()):
        group = in_group.get(a)
        if group is not None and group == in_group.get(b):
            lowest[group] = min(lowest.get(group, 1.0), sim)
    out = [DuplicateGroup(ordered, [labels[i] for i in ordered], lowest[n]) for n, (_, ordered) in enumerate(groups)]
    return sorted(out, key=lambda g: (-len(g.ids), -g.similarity, g.keep))


def _keep_order(image_id: int, labels: dict[int, str], details: dict) -> tuple:
    """Sort key of a group's members: the copy to keep first (most pixels, then oldest, then path)."""
    taken, _, width, height = details.get(image_id, (None, None, None, None))
    pixels = (width or 0) * (height or 0)
    return -pixels, taken or "9999", labels.get(image_id, "")


def _signatures(paths: Sequence[str | None], workers: int,
                on_decoded: Callable[[int, int], None] | None) -> list[np.ndarray | None]:
    out: list[np.ndarray | None] = []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for signature in pool.map(lambda p: thumbnail_signature(p) if p is not None else None, paths):
            out.append(signature)
            if on_decoded is not None:
                on_decoded(len(out), len(paths))
    return out
