"""Text normalisation: repair mis-decoded text, apply a Unicode normal form, drop control characters."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import ftfy

# C0 and C1 control characters (Unicode category Cc) except tab and newline, which carry layout.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class NormalizeConfig:
    fix_encoding: bool = True
    """Repair mojibake ("doesnâ€™t" -> "doesn’t") and HTML entities with ftfy (Speer 2019)."""
    form: Literal["NFC", "NFKC", "NFD", "NFKD", "none"] = "NFC"
    """Unicode normal form; NFC composes characters without changing their meaning."""
    strip_control: bool = True
    """Remove control characters other than tab and newline; CRLF and CR become LF."""


@lru_cache(maxsize=1)
def _ftfy_config() -> ftfy.TextFixerConfig:
    # Encoding repairs only: keep curly quotes, full-width characters and ligatures, which are text,
    # and leave the normal form to `form`.
    return ftfy.TextFixerConfig(
        uncurl_quotes=False,
        fix_character_width=False,
        fix_latin_ligatures=False,
        normalization=None,
        explain=False,
    )


def normalize_text(text: str, cfg: NormalizeConfig) -> str:
    """The text with encoding repaired, normal form applied and control characters removed."""
    if cfg.fix_encoding:
        text = ftfy.fix_text(text, _ftfy_config())
    if cfg.form != "none":
        text = unicodedata.normalize(cfg.form, text)
    if cfg.strip_control:
        text = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    return text
