"""Exact deduplication: keep the first copy of each document and, optionally, of each line.

Hashes are 8-byte BLAKE2b digests kept as int64 so that a whole corpus's keys fit in a numpy array
(8 bytes per document or line) and duplicates are found with one sort.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

BLANK_LINE = 0
"""Hash given to blank lines, which are layout and never removed."""


@dataclass(frozen=True)
class ExactDedupConfig:
    lines: bool = False
    """Also remove each non-blank line seen earlier in the corpus (CCNet's paragraph dedup, Wenzek et al. 2020)."""


def text_hash(text: str) -> int:
    """A stable 63-bit hash of the text (stable across processes, unlike `hash`)."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def line_hashes(text: str) -> list[int]:
    """One hash per line of the text (split on newlines); blank lines get BLANK_LINE."""
    return [text_hash(line.strip()) | 1 if line.strip() else BLANK_LINE for line in text.split("\n")]


def first_occurrence(keys: np.ndarray) -> np.ndarray:
    """For each key, the index of its first occurrence, or -1 where this is the first occurrence."""
    # One stable argsort instead of np.unique(return_index, return_inverse): 0.66 s vs 0.77 s for 2.5M
    # keys on numpy 2.4 (np.unique sorts, then builds the inverse with a second pass).
    keys = np.asarray(keys).reshape(-1)
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.ones(len(keys), dtype=bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    first_of = np.empty(len(keys), dtype=np.int64)
    first_of[order] = order[starts][np.cumsum(starts) - 1]
    return np.where(first_of == np.arange(len(keys)), -1, first_of)


def repeated_lines(flat_hashes: np.ndarray) -> np.ndarray:
    """A mask over all lines of the corpus (concatenated in order): True where a non-blank line repeats."""
    flat_hashes = np.asarray(flat_hashes)
    return (first_occurrence(flat_hashes) >= 0) & (flat_hashes != BLANK_LINE)


def drop_lines(text: str, drop: np.ndarray) -> str:
    """The text without the lines where `drop` (one flag per newline-separated line) is True."""
    return "\n".join(line for line, gone in zip(text.split("\n"), drop, strict=True) if not gone)
