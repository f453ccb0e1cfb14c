"""The query grammar (index/query_syntax.py): ordinary text is never eaten, quotes and --literal make a
phrase literal, weights exist only in expressions, a mistyped image path is an error."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from conftest import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from tinymvlm.cli.main import cli
from tinymvlm.index.query_syntax import Term, looks_like_image_path, parse_query

from tinymvlm.errors import TmvError

PROPERTY = settings(max_examples=examples(300))
words = st.text(alphabet=st.sampled_from("abcxyz019:'./-+ \"é"), min_size=1, max_size=30)
weights = st.sampled_from(["2", "0.5", "-1", ".25", "+3", "10"])


def _is_ordinary(text: str) -> bool:
    """No lone ' + ' / ' - ' operator, no double quote, nothing that looks like an image file."""
    return '"' not in text and not any(w in ("+", "-") for w in text.split()) and not looks_like_image_path(text.strip())


@PROPERTY
@given(text=words.filter(lambda t: t.strip() and _is_ordinary(t)))
def test_ordinary_text_is_searched_exactly_as_written(text):
    assert parse_query(text) == [Term(1.0, text=text.strip())]


@PROPERTY
@given(text=words.filter(str.strip))
def test_literal_takes_anything_as_one_phrase(text):
    assert parse_query(text, literal=True) == [Term(1.0, text=text.strip())]


@PROPERTY
@given(phrases=st.lists(st.tuples(words.filter(lambda t: '"' not in t and t.strip()), weights, st.sampled_from("+-")),
                        min_size=1, max_size=4))
def test_quoted_phrases_with_weights_round_trip(phrases):
    query = " ".join(f'{op} "{phrase}":{weight}' for phrase, weight, op in phrases)
    assert parse_query(query) == [Term((1 if op == "+" else -1) * float(weight), text=phrase.strip())
                                  for phrase, weight, op in phrases]


def test_the_cases_the_issue_names(tmp_path):
    assert parse_query("a clock showing 10:30") == [Term(1.0, text="a clock showing 10:30")]
    assert parse_query("score:10") == [Term(1.0, text="score:10")]  # one term: a colon is text
    assert parse_query('"dog"') == [Term(1.0, text="dog")]
    assert parse_query('"cat + dog"') == [Term(1.0, text="cat + dog")]
    assert parse_query("cat + clock at 10:30") == [Term(1.0, text="cat"), Term(1.0, text="clock at 10:30")]
    assert parse_query('cat + "in snow" - dog:0.5') == [Term(1.0, text="cat"), Term(1.0, text="in snow"),
                                                         Term(-0.5, text="dog")]
    assert parse_query("it's 5\" wide - stripes") == [Term(1.0, text="it's 5\" wide"), Term(-1.0, text="stripes")]
    assert parse_query("AC/DC poster") == [Term(1.0, text="AC/DC poster")]
    assert parse_query('"photos/flyy.png"') == [Term(1.0, text="photos/flyy.png")]
    for typo in ("photos/flyy.png", "IMG_0001.JPG", "cat + photos/flyy.png:2"):
        with pytest.raises(TmvError, match="looks like an image file, but there is no such file"):
            parse_query(typo)
    for bad, message in (('cat + ""', "no words"), ('"cat":x', "weight like"), ("cat + ", "nothing after it")):
        with pytest.raises(TmvError, match=message):
            parse_query(bad)


@pytest.fixture(scope="module")
def small_index(tmp_path_factory, tiny_checkpoint):
    from conftest import make_colour_images

    root = tmp_path_factory.mktemp("q")
    make_colour_images(root / "images")
    result = CliRunner().invoke(cli, ["index", str(root / "images"), "--index", str(root / "idx"), "--checkpoint",
                                      str(tiny_checkpoint), "--workers", "0"])
    assert result.exit_code == 0, result.output
    return root


def test_cli_mistyped_image_path_is_a_one_line_error(small_index):
    result = CliRunner().invoke(cli, ["search", str(small_index / "images" / "redd.png"), "--index",
                                      str(small_index / "idx")])
    message = result.output.strip()
    assert result.exit_code == 2 and message.startswith("error: ") and "\n" not in message, result.output
    assert "no such file" in message


def test_cli_literal_and_quotes_search_the_same_phrase(small_index):
    def hits(*args: str) -> str:
        result = CliRunner().invoke(cli, ["search", *args, "--index", str(small_index / "idx"), "--json"])
        assert result.exit_code == 0, result.output
        return result.stdout

    assert hits("--literal", "red + blue:2") == hits('"red + blue:2"')
    assert hits("--literal", "red + blue:2") != hits("red + blue:2")
    assert hits(str(small_index / "images" / "red.png")).splitlines()[0].find("red.png") > 0
