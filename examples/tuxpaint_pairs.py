"""Write train/test pairs files for Debian's Tux Paint stamps (apt-get install tuxpaint-stamps-default).

Each PNG stamp has a .txt whose first line is an English caption. A stamp is held out for testing when
int(sha1(path relative to the stamps folder).hexdigest()[:8], 16) % 5 == 0: about 633 train and 152
test pairs, the same split on every machine. The held-out stamps are also copied, with their caption
files, under OUT_DIR/test-images/ so that they can be indexed as a photo folder.

    python examples/tuxpaint_pairs.py OUT_DIR [--stamps /usr/share/tuxpaint/stamps]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import shutil
import sys
from pathlib import Path

from tinymvlm.data.pairs import sidecar_caption

DEFAULT_STAMPS = Path("/usr/share/tuxpaint/stamps")


def split_stamps(stamps: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    train, test = [], []
    for png in sorted(stamps.rglob("*.png")):
        caption = sidecar_caption(png)
        if not caption:
            continue
        rel = png.relative_to(stamps).as_posix()
        held_out = int(hashlib.sha1(rel.encode()).hexdigest()[:8], 16) % 5 == 0
        (test if held_out else train).append((str(png), caption))
    return train, test


def write_pairs(path: Path, rows: list[tuple[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(["image", "caption"])
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--stamps", type=Path, default=DEFAULT_STAMPS)
    args = parser.parse_args()
    if not args.stamps.is_dir():
        sys.exit(f"error: {args.stamps} not found; install it with: apt-get install tuxpaint-stamps-default")
    train, test = split_stamps(args.stamps)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_pairs(args.out_dir / "train.tsv", train)
    write_pairs(args.out_dir / "test.tsv", test)
    for image, _ in test:
        target = args.out_dir / "test-images" / Path(image).relative_to(args.stamps)
        target.parent.mkdir(parents=True, exist_ok=True)
        for source in (Path(image), Path(image).with_suffix(".txt")):
            shutil.copyfile(source, target.with_suffix(source.suffix))
    print(f"{len(train)} train and {len(test)} test pairs in {args.out_dir}")


if __name__ == "__main__":
    main()
