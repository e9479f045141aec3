"""Normalisation (encoding repair, NFC, control characters) and language identification."""

from __future__ import annotations

import unicodedata

import pytest

from pretrain.prepare.langid import LangIdConfig, detect_language, language_failure
from pretrain.prepare.normalize import NormalizeConfig, normalize_text

ENGLISH = "The committee met on Tuesday to discuss the budget for the new library and the park."
GERMAN = "Der Ausschuss traf sich am Dienstag, um den Haushalt für die neue Bibliothek zu besprechen."


def test_mojibake_is_repaired_and_curly_quotes_kept():
    assert normalize_text("The Mona Lisa doesnâ€™t have eyebrows.", NormalizeConfig()) == (
        "The Mona Lisa doesn’t have eyebrows."
    )


def test_nfc_composes_characters():
    decomposed = "cafe\u0301"
    assert normalize_text(decomposed, NormalizeConfig()) == "café" == unicodedata.normalize("NFC", decomposed)
    assert normalize_text(decomposed, NormalizeConfig(fix_encoding=False, form="none")) == decomposed


def test_control_characters_are_stripped_but_layout_kept():
    text = "a\x00b\x07c\r\nd\te\x1bf\x85g"
    assert normalize_text(text, NormalizeConfig(fix_encoding=False)) == "abc\nd\tefg"
    assert normalize_text(text, NormalizeConfig(fix_encoding=False, strip_control=False)) == text


def test_languages_are_detected_and_filtered():
    assert detect_language(ENGLISH)[0] == "en"
    assert detect_language(GERMAN)[0] == "de"
    cfg = LangIdConfig()
    assert language_failure(ENGLISH, cfg) == ""
    assert language_failure(GERMAN, cfg) == "language:de"
    assert language_failure(GERMAN, LangIdConfig(languages=("en", "de"))) == ""


def test_low_confidence_is_rejected():
    language, confidence = detect_language("ok")
    assert confidence < 0.65
    assert language_failure("ok", LangIdConfig(languages=(language,))) == "low_confidence"


def test_empty_language_list_is_a_config_error():
    with pytest.raises(ValueError, match="languages"):
        LangIdConfig(languages=())
