"""Each Gopher / C4 quality rule on hand-made documents that break exactly that rule."""

from __future__ import annotations

import dataclasses

import pytest

from pretrain.prepare.quality import (
    QualityConfig,
    duplicate_fractions,
    duplicate_ngram_chars_fraction,
    quality_failure,
    top_ngram_chars_fraction,
)

GOOD = (
    "The lighthouse keeper climbed the stairs every evening to light the lamp. "
    "She had worked there for twenty years and knew each step by heart. "
    "Ships passing the rocky coast relied on that beam to find their way home. "
    "In winter the storms were fierce, and waves broke over the lower windows. "
    "Still, she never missed a night, and the village was grateful to have her. "
    "Her logbook recorded weather, passing vessels and the occasional visitor with a question."
)
SHORT_LINES = [f"Line {i} of the log is short and to the point." for i in range(6)]
RELAXED = QualityConfig(
    max_duplicate_lines_fraction=1.0,
    max_duplicate_line_chars_fraction=1.0,
    max_duplicate_paragraphs_fraction=1.0,
    max_duplicate_paragraph_chars_fraction=1.0,
    max_top_ngram_chars_fraction=(1.0, 1.0, 1.0),
    max_duplicate_ngram_chars_fraction=(1.0,) * 6,
)
"""The repetition rules switched off, to test the paragraph and n-gram rules one at a time."""


def _words(n: int, stem: str = "word") -> str:
    return " ".join(f"{stem}{i}" for i in range(n))


def test_good_document_passes():
    assert len(GOOD.split()) > 50
    assert quality_failure(GOOD, QualityConfig()) == ""


@pytest.mark.parametrize(
    "text,reason,cfg",
    [
        ("The cat sat on the mat with the dog.", "too_few_words", QualityConfig()),
        ("", "too_few_words", QualityConfig()),
        (GOOD, "too_many_words", QualityConfig(max_words=60)),
        ("the of and to " + " ".join(["a"] * 80), "mean_word_length", QualityConfig()),
        ("the of and " + _words(60, "extraordinarilylongish"), "mean_word_length", QualityConfig()),
        (GOOD + " #tag" * 12, "symbol_word_ratio", QualityConfig()),
        (GOOD + " ..." * 12, "symbol_word_ratio", QualityConfig()),
        (GOOD + " 123 4567 89 0.5" * 5, "alpha_words", QualityConfig()),
        (_words(70, "lamp"), "stop_words", QualityConfig()),
        ("\n".join(f"- {line}" for line in GOOD.split(". ")), "bullet_lines", QualityConfig()),
        ("\n".join(f"{line} ..." for line in GOOD.split(". ")), "ellipsis_lines", QualityConfig()),
        ("Lorem ipsum dolor sit amet. " + GOOD, "lorem_ipsum", QualityConfig()),
        (GOOD + " {x}", "curly_brace", QualityConfig(reject_curly_brace=True)),
    ],
)
def test_document_rules(text, reason, cfg):
    assert quality_failure(text, cfg) == reason


def test_code_braces_pass_by_default():
    assert quality_failure(GOOD + " {x}", QualityConfig()) == ""


def test_duplicate_lines_and_their_characters():
    lines = GOOD.split(". ")
    assert quality_failure("\n".join(lines + lines[:3]), QualityConfig()) == "duplicate_lines"
    # One long line repeated once: few repeated lines (1 of 8) but many repeated characters.
    long_repeat = "\n".join([GOOD, *SHORT_LINES, GOOD])
    assert quality_failure(long_repeat, QualityConfig()) == "duplicate_line_chars"


def test_duplicate_paragraphs_and_their_characters():
    paragraphs = GOOD.split(". ")
    repeated = "\n\n".join(paragraphs + paragraphs[:3])
    assert quality_failure(repeated, dataclasses.replace(RELAXED, max_duplicate_paragraphs_fraction=0.3)) == (
        "duplicate_paragraphs"
    )
    cfg = dataclasses.replace(RELAXED, max_duplicate_paragraph_chars_fraction=0.2)
    assert quality_failure("\n\n".join([GOOD, *SHORT_LINES, GOOD]), cfg) == "duplicate_paragraph_chars"


def test_top_ngram_rule():
    text = GOOD + " " + " ".join(f"lighthouse keeper {w}" for w in _words(30).split())
    cfg = dataclasses.replace(RELAXED, max_top_ngram_chars_fraction=(0.2, 0.18, 0.16))
    assert quality_failure(text, cfg) == "top_2gram_chars"


def test_duplicate_ngram_rule():
    text = GOOD + " " + GOOD.split(". ")[0] + " " + GOOD.split(". ")[1]
    cfg = dataclasses.replace(
        RELAXED, max_duplicate_ngram_chars_fraction=(0.15, 0.14, 0.13, 0.12, 0.11, 0.10)
    )
    assert quality_failure(text, cfg) == "duplicate_5gram_chars"
    assert quality_failure(GOOD, cfg) == ""


def test_repetition_measures():
    assert duplicate_fractions(["a", "bb", "a", "a"]) == (0.5, 2 / 5)
    # "x y" occurs 3 times: 3 * 2 characters over 8 word characters.
    assert top_ngram_chars_fraction("x y x y x y z w".split(), 2) == pytest.approx(6 / 8)
    assert top_ngram_chars_fraction("a b c d".split(), 2) == 0.0
    # The second "a b c" repeats the first: its 3 words, 3 of the 7 word characters... plus nothing else.
    assert duplicate_ngram_chars_fraction("a b c q a b c".split(), 3) == pytest.approx(3 / 7)
