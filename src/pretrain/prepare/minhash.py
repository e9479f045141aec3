"""Near-duplicate detection: MinHash over word n-gram shingles, LSH banding, keep the first of each cluster.

A document's signature is, for each of `num_perm` hash functions, the minimum hash over its set of
word 5-gram shingles; two signatures agree on a row with probability equal to the Jaccard similarity
of the shingle sets (Broder 1997). LSH splits the signature into `bands` of `rows` and calls two
documents candidates when any band is identical, which happens with probability 1 - (1 - J^rows)^bands:
an S-curve whose steep part sits at the threshold (Leskovec et al., Mining of Massive Datasets, ch. 3).
Candidates are joined into clusters (connected components) and each cluster keeps its first document.

Hand-written rather than datasketch because datasketch hashes every shingle with SHA-1 in a Python loop
and builds one `MinHash` object per document; here one batch of documents is hashed with a rolling
polynomial over its UTF-8 bytes and permuted as one (shingles x permutations) numpy array.
benchmarks/bench_dedup.py measures both in one process (docs/data.md has the figures).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

# Rolling-hash base and the MurmurHash3 64-bit finalizer constants (Appleby, smhasher), which spread
# the polynomial hash's weak low bits over all 64 bits.
_BASE = np.uint64(0x100000001B3)
_FMIX1 = np.uint64(0xFF51AFD7ED558CCD)
_FMIX2 = np.uint64(0xC4CEB9FE1A85EC53)
_SHIFT33 = np.uint64(33)
_SHIFT32 = np.uint64(32)
_BATCH_CHARS = 1 << 22
"""Characters shingled at once; the rolling hash needs ~40 bytes per character (so ~160 MiB)."""
_PERM_CHUNK = 1 << 17
"""Elements of the (permutations x shingles) array computed at once: 1 MiB stays in cache, which
measured 2.5x faster than 32 MiB blocks on the benchmark."""


@dataclass(frozen=True)
class NearDedupConfig:
    """Defaults are datatrove's MinhashConfig, used for FineWeb (Penedo et al. 2024): word 5-grams,
    14 bands x 8 rows = 112 permutations, an S-curve whose midpoint (1/14)**(1/8) is Jaccard 0.72."""

    ngram: int = 5
    """Words per shingle. Range [1, inf)."""
    num_perm: int = 112
    """MinHash permutations (hash functions) per document. Range [1, inf)."""
    bands: int = 14
    """LSH bands: documents identical on all rows of any band are candidate duplicates. Range [1, inf)."""
    rows: int = 8
    """Signature rows per band; bands * rows must not exceed num_perm. Range [1, inf)."""
    threshold: float = 0.0
    """If > 0, ignore bands/rows and pick them for this Jaccard threshold as datasketch's MinHashLSH does. Range [0, 1)."""
    seed: int = 1
    """Seed of the permutations, so signatures are reproducible across runs and processes. Range [0, 4294967295]."""

    def __post_init__(self) -> None:
        if self.ngram < 1 or self.num_perm < 1:
            raise ValueError("near_dedup.ngram and near_dedup.num_perm must be >= 1")
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"near_dedup.threshold must be in [0, 1), got {self.threshold}")
        bad_shape = min(self.bands, self.rows) < 1 or self.bands * self.rows > self.num_perm
        if not self.threshold and bad_shape:
            raise ValueError("near_dedup.bands and .rows must be >= 1 with bands * rows <= num_perm")

    def band_shape(self) -> tuple[int, int]:
        """(bands, rows) of the LSH index."""
        if self.threshold:
            return optimal_bands(self.threshold, self.num_perm)
        return self.bands, self.rows


@lru_cache(maxsize=32)
def optimal_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimising the false-positive area below and false-negative area above threshold.

    The same criterion, with equal weights, as datasketch's MinHashLSH, so both index the same way.
    """
    best, best_err = (1, 1), np.inf
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            below = np.linspace(0.0, threshold, 201)
            above = np.linspace(threshold, 1.0, 201)
            fp = np.trapezoid(1 - (1 - below**rows) ** bands, below)
            fn = np.trapezoid((1 - above**rows) ** bands, above)
            if fp + fn < best_err:
                best, best_err = (bands, rows), fp + fn
    return best


def _fmix64(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> _SHIFT33)
    x *= _FMIX1
    x ^= x >> _SHIFT33
    x *= _FMIX2
    return x ^ (x >> _SHIFT33)


def _powers(length: int) -> tuple[np.ndarray, np.ndarray]:
    """_BASE**i and its inverse**i modulo 2**64 for i < length (wrapping uint64 products)."""
    up, down = _powers_cached(1 << max(16, (length - 1).bit_length()))
    return up[:length], down[:length]


@lru_cache(maxsize=2)
def _powers_cached(length: int) -> tuple[np.ndarray, np.ndarray]:
    inverse = pow(int(_BASE), -1, 1 << 64)
    up = np.full(length, _BASE, dtype=np.uint64)
    up[0] = 1
    down = np.full(length, inverse, dtype=np.uint64)
    down[0] = 1
    return np.cumprod(up, dtype=np.uint64), np.cumprod(down, dtype=np.uint64)


def shingle_hashes(texts: list[str], ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of each document's word n-grams (lower-cased, whitespace-split) and their offsets.

    Returns (hashes (num_shingles,), starts (num_docs,)): document d owns hashes[starts[d]:starts[d+1]].
    A document shorter than `ngram` words is one shingle, the whole document.
    """
    joined = "\n".join(" ".join(t.lower().split()) for t in texts).encode()
    buf = np.frombuffer(joined, dtype=np.uint8)
    is_sep = (buf == 0x20) | (buf == 0x0A)
    seps = np.flatnonzero(is_sep)
    word_start = np.concatenate(([0], seps + 1))
    word_end = np.concatenate((seps, [len(buf)]))
    doc_of_word = np.cumsum(np.concatenate(([0], buf[seps] == 0x0A)))
    words_per_doc = np.bincount(doc_of_word, minlength=len(texts))
    first_word = np.concatenate(([0], np.cumsum(words_per_doc)[:-1]))
    per_doc = np.maximum(words_per_doc - ngram + 1, 1)
    starts = np.concatenate(([0], np.cumsum(per_doc)[:-1]))
    first = np.repeat(first_word, per_doc) + np.arange(per_doc.sum()) - np.repeat(starts, per_doc)
    last = np.minimum(first + ngram - 1, np.repeat(first_word + words_per_doc - 1, per_doc))
    up, down = _powers(len(buf) + 1)
    prefix = np.zeros(len(buf) + 1, dtype=np.uint64)
    np.cumsum(buf * up[:-1], out=prefix[1:])
    lo, hi = word_start[first], word_end[last]
    return _fmix64((prefix[hi] - prefix[lo]) * down[lo]), starts


@lru_cache(maxsize=8)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, np.iinfo(np.uint64).max, num_perm, dtype=np.uint64, endpoint=True) | np.uint64(1)
    b = rng.integers(0, np.iinfo(np.uint64).max, num_perm, dtype=np.uint64, endpoint=True)
    return a, b


def _size_bounded(texts: list[str], limit: int) -> list[list[str]]:
    """Consecutive groups of texts of at most `limit` characters each (a longer text is its own group)."""
    groups: list[list[str]] = [[]]
    size = 0
    for text in texts:
        if groups[-1] and size + len(text) > limit:
            groups.append([])
            size = 0
        groups[-1].append(text)
        size += len(text)
    return groups


def minhash_signatures(texts: list[str], cfg: NearDedupConfig, batch_chars: int = _BATCH_CHARS) -> np.ndarray:
    """MinHash signatures, (num_docs, num_perm) uint32, of each document's shingle set.

    Permutation k maps a 32-bit shingle hash x to (a_k * x + b_k mod 2**64) >> 32, Dietzfelbinger's
    multiply-add-shift universal hash (1996); no modulo, so numpy runs it at memory speed. The shift
    is monotonic, so it is applied after the minimum, to the small (docs x perms) result. Documents
    are hashed in groups of at most `batch_chars` characters to bound memory.
    """
    if not texts:
        return np.zeros((0, cfg.num_perm), dtype=np.uint32)
    return np.vstack([_signatures(group, cfg) for group in _size_bounded(texts, batch_chars)])


def _signatures(texts: list[str], cfg: NearDedupConfig) -> np.ndarray:
    hashes, starts = shingle_hashes(texts, cfg.ngram)
    x = hashes >> _SHIFT32
    a, b = _permutations(cfg.num_perm, cfg.seed)
    out = np.empty((len(texts), cfg.num_perm), dtype=np.uint64)
    step = max(1, _PERM_CHUNK // len(x))
    for lo in range(0, cfg.num_perm, step):
        values = np.multiply.outer(a[lo : lo + step], x)
        values += b[lo : lo + step, None]
        out[:, lo : lo + step] = np.minimum.reduceat(values, starts, axis=1).T
    return (out >> _SHIFT32).astype(np.uint32)


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit key per (document, band): equal keys mean an identical band. Shape (num_docs, bands)."""
    mult = _fmix64(np.arange(1, rows + 1, dtype=np.uint64))
    keys = np.empty((len(signatures), bands), dtype=np.uint64)
    for band in range(bands):
        block = signatures[:, band * rows : (band + 1) * rows].astype(np.uint64)
        keys[:, band] = _fmix64((block * mult).sum(axis=1, dtype=np.uint64) + np.uint64(band))
    return keys


def collision_edges(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of documents whose key in one band is equal, chained within each bucket."""
    order = np.argsort(keys, kind="stable")
    same = keys[order[1:]] == keys[order[:-1]]
    return order[:-1][same], order[1:][same]


def cluster_duplicates(band_columns: Iterable[np.ndarray], num_docs: int) -> np.ndarray:
    """For each document, the index of the first document of its LSH cluster, or -1 if it is that one.

    `band_columns` yields one (num_docs,) key array per band, so only one band is in memory at a time.
    """
    src, dst = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for keys in band_columns:
        s, d = collision_edges(np.asarray(keys))
        src.append(s)
        dst.append(d)
    return clusters_from_edges(np.concatenate(src), np.concatenate(dst), num_docs)


def clusters_from_edges(src: np.ndarray, dst: np.ndarray, num_docs: int) -> np.ndarray:
    """Connected components of the candidate edges: per document its component's first index, or -1."""
    graph = coo_matrix((np.ones(len(src), np.int8), (src, dst)), shape=(num_docs, num_docs))
    _, label = connected_components(graph, directed=False)
    first = np.full(label.max() + 1 if num_docs else 0, num_docs, dtype=np.int64)
    np.minimum.at(first, label, np.arange(num_docs))
    keeper = first[label]
    return np.where(keeper == np.arange(num_docs), -1, keeper)
