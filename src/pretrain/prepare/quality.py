"""Document quality heuristics from Gopher (Rae et al. 2021, appendix A.1.1 and table A1) and C4.

`quality_failure(text, cfg)` returns the name of the first rule a document breaks, or "" when it
passes them all. Rules run cheapest first. Words are whitespace-separated tokens; a "symbol word" is
one with no letter or digit (a lone comma, a dash). Thresholds default to the papers' values, which
were tuned on English web text: set `min_stop_words=0` for other languages.

Hand-written rather than datatrove's GopherQualityFilter/GopherRepetitionFilter: those take
datatrove `Document`s inside its own executor and tokenise words with spaCy or NLTK (extra
multi-hundred-MB dependencies, NLTK data fetched at run time); these rules are a few lines each.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

# Gopher's stop-word rule: "at least two of the following English words" (Rae et al. 2021, A.1.1).
GOPHER_STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
BULLETS = ("•", "‣", "◦", "⁃", "●", "▪", "-", "*", "·")
ELLIPSES = ("...", "…")
_PARAGRAPH_SPLIT = re.compile(r"\n\s*\n")


@dataclass(frozen=True)
class QualityConfig:
    min_words: int = 50
    """Fewest words a document may have (Gopher: 50). Range [0, inf)."""
    max_words: int = 100_000
    """Most words a document may have (Gopher: 100,000). Range [1, inf)."""
    min_mean_word_length: float = 3.0
    """Smallest mean length of non-symbol words, in characters (Gopher: 3). Range [0, inf)."""
    max_mean_word_length: float = 10.0
    """Largest mean length of non-symbol words, in characters (Gopher: 10). Range [0, inf)."""
    max_symbol_word_ratio: float = 0.1
    """Most '#' per word, and most ellipses per word (Gopher: 0.1 for either). Range [0, inf)."""
    max_bullet_lines_fraction: float = 0.9
    """Most lines that may start with a bullet (Gopher: 90%). Range [0, 1]."""
    max_ellipsis_lines_fraction: float = 0.3
    """Most lines that may end with an ellipsis (Gopher: 30%). Range [0, 1]."""
    min_alpha_words_fraction: float = 0.8
    """Fewest words that must contain a letter (Gopher: 80%). Range [0, 1]."""
    min_stop_words: int = 2
    """Fewest distinct Gopher stop words (the, be, to, of, and, that, have, with) (Gopher: 2). Range [0, inf)."""
    max_duplicate_lines_fraction: float = 0.3
    """Most lines that repeat an earlier line of the document (Gopher table A1: 0.30). Range [0, 1]."""
    max_duplicate_line_chars_fraction: float = 0.2
    """Most characters in repeated lines (Gopher table A1: 0.20). Range [0, 1]."""
    max_duplicate_paragraphs_fraction: float = 0.3
    """Most paragraphs (blank-line separated) that repeat an earlier one (Gopher table A1: 0.30). Range [0, 1]."""
    max_duplicate_paragraph_chars_fraction: float = 0.2
    """Most characters in repeated paragraphs (Gopher table A1: 0.20). Range [0, 1]."""
    max_top_ngram_chars_fraction: tuple[float, ...] = (0.20, 0.18, 0.16)
    """For n = 2, 3, 4: most characters covered by the most frequent word n-gram (Gopher table A1). Range [0, 1]."""
    max_duplicate_ngram_chars_fraction: tuple[float, ...] = (0.15, 0.14, 0.13, 0.12, 0.11, 0.10)
    """For n = 5..10: most characters in word n-grams that occur more than once (Gopher table A1). Range [0, 1]."""
    reject_lorem_ipsum: bool = True
    """Drop documents containing "lorem ipsum" placeholder text (C4, Raffel et al. 2020)."""
    reject_curly_brace: bool = False
    """Drop documents containing '{', C4's proxy for code (off: it also drops LaTeX and code on purpose)."""


def _is_symbol(word: str) -> bool:
    return not any(ch.isalnum() for ch in word)


def _word_rules(text: str, words: list[str], cfg: QualityConfig) -> str:
    content = [w for w in words if not _is_symbol(w)]
    if len(content) < max(cfg.min_words, 1):
        return "too_few_words"
    if len(content) > cfg.max_words:
        return "too_many_words"
    mean_length = sum(map(len, content)) / len(content)
    if not cfg.min_mean_word_length <= mean_length <= cfg.max_mean_word_length:
        return "mean_word_length"
    hashes, ellipses = text.count("#"), text.count("...") + text.count("…")
    if max(hashes, ellipses) / len(words) > cfg.max_symbol_word_ratio:
        return "symbol_word_ratio"
    if sum(any(ch.isalpha() for ch in w) for w in words) / len(words) < cfg.min_alpha_words_fraction:
        return "alpha_words"
    if len(GOPHER_STOP_WORDS.intersection(w.lower() for w in words)) < cfg.min_stop_words:
        return "stop_words"
    return ""


def _line_rules(lines: list[str], cfg: QualityConfig) -> str:
    if not lines:
        return ""
    if sum(line.lstrip().startswith(BULLETS) for line in lines) / len(lines) > cfg.max_bullet_lines_fraction:
        return "bullet_lines"
    if sum(line.rstrip().endswith(ELLIPSES) for line in lines) / len(lines) > cfg.max_ellipsis_lines_fraction:
        return "ellipsis_lines"
    return ""


def duplicate_fractions(parts: list[str]) -> tuple[float, float]:
    """(fraction of parts, fraction of characters) that repeat an earlier part."""
    seen: set[str] = set()
    repeats, repeat_chars = 0, 0
    for part in parts:
        if part in seen:
            repeats += 1
            repeat_chars += len(part)
        seen.add(part)
    total_chars = sum(map(len, parts))
    return repeats / max(len(parts), 1), repeat_chars / max(total_chars, 1)


def _ngrams(words: list[str], n: int) -> zip:
    # strict=False on purpose: the shifted copies are shorter, which ends the n-grams at the last word.
    return zip(*(words[i:] for i in range(n)), strict=False)


def top_ngram_chars_fraction(words: list[str], n: int) -> float:
    """Characters covered by the most frequent word n-gram (times its count) over all word characters."""
    counts = Counter(_ngrams(words, n))
    if not counts:
        return 0.0
    gram, count = counts.most_common(1)[0]
    if count < 2:
        return 0.0
    return sum(map(len, gram)) * count / max(sum(map(len, words)), 1)


def duplicate_ngram_chars_fraction(words: list[str], n: int) -> float:
    """Characters of words inside any repeat of an earlier word n-gram, each word counted once."""
    seen: set[tuple[str, ...]] = set()
    in_repeat = [False] * len(words)
    for i, gram in enumerate(_ngrams(words, n)):
        if gram in seen:
            in_repeat[i : i + n] = [True] * n
        seen.add(gram)
    repeated = sum(len(w) for w, flag in zip(words, in_repeat, strict=True) if flag)
    return repeated / max(sum(map(len, words)), 1)


def _repetition_rules(text: str, lines: list[str], words: list[str], cfg: QualityConfig) -> str:
    line_frac, line_chars = duplicate_fractions(lines)
    if line_frac > cfg.max_duplicate_lines_fraction:
        return "duplicate_lines"
    if line_chars > cfg.max_duplicate_line_chars_fraction:
        return "duplicate_line_chars"
    paragraphs = [p.strip() for p in _PARAGRAPH_SPLIT.split(text) if p.strip()]
    para_frac, para_chars = duplicate_fractions(paragraphs)
    if para_frac > cfg.max_duplicate_paragraphs_fraction:
        return "duplicate_paragraphs"
    if para_chars > cfg.max_duplicate_paragraph_chars_fraction:
        return "duplicate_paragraph_chars"
    for n, limit in enumerate(cfg.max_top_ngram_chars_fraction, start=2):
        if top_ngram_chars_fraction(words, n) > limit:
            return f"top_{n}gram_chars"
    for n, limit in enumerate(cfg.max_duplicate_ngram_chars_fraction, start=5):
        if duplicate_ngram_chars_fraction(words, n) > limit:
            return f"duplicate_{n}gram_chars"
    return ""


def quality_failure(text: str, cfg: QualityConfig) -> str:
    """The first quality rule the document breaks ("too_few_words", "stop_words", ...), or ""."""
    lowered = text.lower()
    if cfg.reject_lorem_ipsum and "lorem ipsum" in lowered:
        return "lorem_ipsum"
    if cfg.reject_curly_brace and "{" in text:
        return "curly_brace"
    words = text.split()
    if not words:
        return "too_few_words"
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    return (
        _word_rules(text, words, cfg) or _line_rules(lines, cfg) or _repetition_rules(text, lines, words, cfg)
    )
