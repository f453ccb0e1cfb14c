"""Fault suite, pairs files: every planted row (tests/helpers/hostile.py) is kept or skipped with its row number and
reason; long captions are truncated only at tokenisation; nothing usable is a one-line error.

The basic bad-row cases are also in tests/data/test_data.py::test_bad_rows_are_skipped_with_row_numbers; this
file plants them all in one file together with the rest (stray tabs and quotes, NUL bytes, URLs...).
"""

from __future__ import annotations

import json

from click.testing import CliRunner
from helpers.hostile import make_hostile_pairs
from tinymvlm.cli.main import cli
from tinymvlm.index.caption_files import read_captions

from tinymvlm.data.pairs import load_pairs


def _skips(pairs) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for skip in pairs.skipped:
        out.setdefault(skip.where, []).append(skip.reason)
    return out


def test_hostile_pairs_file_keeps_good_rows_and_names_each_bad_one(tmp_path):
    path, rows, expected = make_hostile_pairs(tmp_path)
    pairs = load_pairs(str(path))
    assert dict(zip(pairs.keys, pairs.captions)) == expected
    skips = _skips(pairs)
    for row in rows:
        where = f"{path}:{row.line}"
        if row.reason in ("", "header", "blank"):
            assert where not in skips, (row.what, skips.get(where))
        else:
            assert len(skips.get(where, [])) == 1 and row.reason in skips[where][0], (row.what, skips.get(where))
    assert len(pairs.skipped) == sum(r.reason not in ("", "header", "blank") for r in rows)
    assert pairs.origins == [f"{path}:{n}" for n in (2, 13, 14, 15, 16)]


def test_long_captions_are_kept_whole_and_truncated_at_tokenisation(tmp_path, tiny_checkpoint):
    from tinymvlm.inference.embed import embed_texts
    from tinymvlm.models.checkpoint import load_checkpoint
    from tinymvlm.training.trainer import pretokenize

    path, _, _ = make_hostile_pairs(tmp_path)
    pairs = load_pairs(str(path))
    long_caption = pairs.captions[pairs.keys.index("img/white.png")][0]
    assert len(long_caption.split()) == 5000
    model, tokenizer, _ = load_checkpoint(tiny_checkpoint)
    limit = model.config.context_length
    ids = pretokenize(tokenizer, pairs.captions, limit)
    assert max(len(i) for caps in ids for i in caps) == limit
    vectors = embed_texts(model, tokenizer, [long_caption, "word " * (limit - 2)])
    assert float(vectors[0] @ vectors[1]) > 0.999  # only the first `limit` tokens count


def test_jsonl_csv_and_cr_line_endings(tmp_path):
    (tmp_path / "a.png").write_bytes(_png())
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text("\n".join([
        json.dumps({"image": "a.png", "caption": "fine"}),
        "{not json",
        json.dumps(["a.png", "a list"]),
        json.dumps({"image": "a.png"}),
        json.dumps({"image": 7, "caption": "number path"}),
        "[" * 50_000 + "]" * 50_000,
        json.dumps({"image": "~no_such_user_zz/a.png", "caption": "unknown home"}),
        json.dumps({"image": "~\u0000/a.png", "caption": "NUL after ~"}),
    ]), encoding="utf-8")
    pairs = load_pairs(str(jsonl))
    assert pairs.captions == [["fine"]]
    reasons = {s.where.rsplit(":", 1)[1]: s.reason for s in pairs.skipped}
    assert "not a JSON object" in reasons["2"] and reasons["3"] == "not a JSON object"
    assert "cannot tell which column holds the caption" in reasons["4"] and "must be a string" in reasons["5"]
    assert reasons["6"] == "not a JSON object (nested too deeply)"
    assert "image not found" in reasons["7"] or "cannot resolve" in reasons["7"]
    assert "cannot resolve image path" in reasons["8"]

    csv_file = tmp_path / "pairs.csv"
    csv_file.write_bytes(b"image,caption\r\na.png,\"a quoted, fine caption\"\r\na.png,\"unterminated\r\n")
    pairs = load_pairs(str(csv_file))
    assert pairs.captions == [["a quoted, fine caption"]]
    assert "malformed quoting" in pairs.skipped[0].reason and pairs.skipped[0].where.endswith(":3")

    old_mac = tmp_path / "mac.tsv"
    old_mac.write_bytes(b"a.png\tfirst\ra.png\tsecond\r")  # classic Mac OS line ends
    assert load_pairs(str(old_mac)).captions == [["first", "second"]]


def _png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buffer, "PNG")
    return buffer.getvalue()


def test_nothing_usable_is_a_one_line_error_naming_file_and_rows(tmp_path):
    pairs_file = tmp_path / "pairs.tsv"
    pairs_file.write_bytes(b"gone.png\ta caption\nalso-gone.png\n")
    result = CliRunner().invoke(cli, ["train", "--data", str(pairs_file)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        f"error: {pairs_file}: no usable image-caption pairs ({pairs_file}:2: expected 2 columns, found 1; "
        f"{pairs_file}:1: image not found: {tmp_path / 'gone.png'})")
    assert "Traceback" not in result.output


def test_hostile_caption_file_for_text_search(tmp_path):
    """The same hostile TSV given to `tmv index --captions`: its caption column, bad rows named by row."""
    path, rows, _ = make_hostile_pairs(tmp_path)
    parsed = read_captions(path)
    assert "a red square" in parsed.texts and "a blue square" in parsed.texts
    assert any(t.startswith("word word") for t in parsed.texts)
    where = {s.where for s in parsed.skipped}
    assert f"{path}:6" in where  # invalid UTF-8
    assert all(s.where.startswith(f"{path}:") for s in parsed.skipped)
