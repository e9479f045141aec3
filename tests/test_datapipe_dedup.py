"""Exact and MinHash-LSH near deduplication on planted duplicates."""

from __future__ import annotations

import random

import numpy as np
import pytest

from pretrain.prepare.dedup import drop_lines, first_occurrence, line_hashes, repeated_lines, text_hash
from pretrain.prepare.minhash import (
    NearDedupConfig,
    band_keys,
    cluster_duplicates,
    minhash_signatures,
    optimal_bands,
    shingle_hashes,
)


def _corpus(n: int, words: int = 120, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(5000)]
    return [" ".join(rng.choices(vocab, k=words)) for _ in range(n)]


def _edit(text: str, rate: float, rng: random.Random) -> str:
    """Substitute, delete or insert a word at `rate` of positions."""
    out = []
    for word in text.split():
        if rng.random() >= rate:
            out.append(word)
            continue
        op = rng.choice(("sub", "del", "ins"))
        out += {"sub": ["edited"], "del": [], "ins": [word, "inserted"]}[op]
    return " ".join(out)


def _shingles(text: str, n: int = 5) -> set[str]:
    words = text.lower().split()
    return {" ".join(words[i : i + n]) for i in range(max(len(words) - n + 1, 1))}


def _jaccard(a: str, b: str) -> float:
    sa, sb = _shingles(a), _shingles(b)
    return len(sa & sb) / len(sa | sb)


def test_first_occurrence_points_at_the_first_copy():
    assert first_occurrence(np.array([5, 7, 5, 9, 7, 5])).tolist() == [-1, -1, 0, -1, 1, 0]


def test_text_hash_is_stable_and_separates_texts():
    assert text_hash("a b") == text_hash("a b") != text_hash("a  b")
    assert 0 <= text_hash("x") < 2**63


def test_repeated_lines_keep_the_first_and_spare_blank_lines():
    docs = ["intro\nshared footer\n\nbody one", "shared footer\nbody two\n"]
    flat = np.array([h for d in docs for h in line_hashes(d)])
    drop = repeated_lines(flat)
    first, second = drop[:4], drop[4:]
    assert drop_lines(docs[0], first) == docs[0]
    assert drop_lines(docs[1], second) == "body two\n"


def test_shingles_per_document_and_short_documents():
    hashes, starts = shingle_hashes(["a b c d e f g", "tiny doc", "", "A  b C d\tE"], ngram=5)
    assert starts.tolist() == [0, 3, 4, 5]
    assert len(hashes) == 6
    # Lower-casing and whitespace collapsing: "A  b C d\tE" is the first shingle of document 0.
    assert hashes[5] == hashes[0]


def test_signature_of_a_document_does_not_depend_on_its_batch():
    docs = _corpus(20)
    cfg = NearDedupConfig()
    together = minhash_signatures(docs, cfg)
    alone = np.vstack([minhash_signatures([d], cfg) for d in docs])
    assert np.array_equal(together, alone)


def test_long_batches_are_split_without_changing_signatures():
    docs = _corpus(30)
    cfg = NearDedupConfig()
    # About three documents per group of 2,000 characters.
    assert np.array_equal(minhash_signatures(docs, cfg, batch_chars=2000), minhash_signatures(docs, cfg))


def test_signature_agreement_estimates_jaccard():
    rng = random.Random(1)
    base = _corpus(200, seed=2)
    edited = [_edit(t, rng.choice([0.01, 0.03, 0.08]), rng) for t in base]
    cfg = NearDedupConfig(num_perm=256)  # more permutations: a tighter estimate to test the mean against
    a, b = minhash_signatures(base, cfg), minhash_signatures(edited, cfg)
    estimate = (a == b).mean(axis=1)
    truth = np.array([_jaccard(x, y) for x, y in zip(base, edited, strict=True)])
    # Standard error of the estimate is sqrt(J(1-J)/256) <= 0.031; the mean error must be near zero.
    assert abs((estimate - truth).mean()) < 0.01
    assert np.abs(estimate - truth).max() < 0.15


def test_bands_follow_the_threshold():
    bands, rows = optimal_bands(0.7, 128)
    assert bands * rows <= 128
    p = lambda j: 1 - (1 - j**rows) ** bands  # noqa: E731 - probability two documents become candidates
    assert p(0.9) > 0.998 and p(0.3) < 0.001 and 0.2 < p(0.7) < 0.8
    assert NearDedupConfig(num_perm=128, threshold=0.7).band_shape() == (bands, rows)
    assert NearDedupConfig().band_shape() == (14, 8)
    with pytest.raises(ValueError, match="bands"):
        NearDedupConfig(bands=20, rows=10)


def test_planted_near_duplicates_are_clustered_and_nothing_else():
    rng = random.Random(3)
    originals = _corpus(400, seed=4)
    copies = [_edit(originals[i], 0.01, rng) for i in range(0, 400, 4)]
    docs = originals + copies
    cfg = NearDedupConfig()
    bands, rows = cfg.band_shape()
    keys = band_keys(minhash_signatures(docs, cfg), bands, rows)
    duplicate_of = cluster_duplicates(keys.T, len(docs))
    planted = {400 + k: i for k, i in enumerate(range(0, 400, 4))}
    found = {i: int(duplicate_of[i]) for i in np.flatnonzero(duplicate_of >= 0)}
    recall = sum(found.get(copy) == original for copy, original in planted.items()) / len(planted)
    assert recall >= 0.95
    assert set(found) <= set(planted)  # unrelated random documents never collide


def test_clusters_keep_their_first_document():
    keys = [np.array([1, 2, 1, 3, 2]), np.array([9, 8, 7, 9, 6])]
    # Band 0 joins 0-2 and 1-4; band 1 joins 0-3: clusters {0, 2, 3} and {1, 4}.
    assert cluster_duplicates(keys, 5).tolist() == [-1, -1, 0, 0, 1]
