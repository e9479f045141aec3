"""Language identification with py3langid, whose naive-Bayes model ships inside the wheel.

No download at run time, unlike fastText's lid.176.bin (datatrove's LanguageFilter). py3langid
0.4 calibrates its probabilities by the text length, so one confidence threshold serves short and
long documents; ~0.4 ms per paragraph on one core.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from py3langid.langid import MODEL_FILE, LanguageIdentifier


@dataclass(frozen=True)
class LangIdConfig:
    languages: tuple[str, ...] = ("en",)
    """ISO 639-1 codes of the languages to keep."""
    min_confidence: float = 0.65
    """Least probability of the detected language (FineWeb keeps English at fastText score 0.65). Range [0, 1]."""
    max_chars: int = 10_000
    """Classify only the first max_chars characters of a document (speed; the verdict settles early). Range [1, inf)."""

    def __post_init__(self) -> None:
        if not self.languages:
            raise ValueError("langid.languages is empty; list the languages to keep or drop the langid stage")


@lru_cache(maxsize=1)
def _identifier() -> LanguageIdentifier:
    # One per process: datasets' worker processes each load the 2 MB model once.
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def detect_language(text: str, max_chars: int = 10_000) -> tuple[str, float]:
    """(ISO 639-1 code, probability) of the text's most likely language."""
    language, confidence = _identifier().classify(text[:max_chars])
    return language, float(confidence)


def language_failure(text: str, cfg: LangIdConfig) -> str:
    """'' when the text is in a kept language with enough confidence, else why not ('language:de', ...)."""
    language, confidence = detect_language(text, cfg.max_chars)
    if language not in cfg.languages:
        return f"language:{language}"
    if confidence < cfg.min_confidence:
        return "low_confidence"
    return ""
