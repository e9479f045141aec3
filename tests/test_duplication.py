"""Duplication analysis: the planted copy counts are exact, and bad settings fail with one error line."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from pretrain.config import ConfigError
from pretrain.eval.duplication import (
    DuplicationSection,
    exact_dedup,
    load_planted_corpus,
    main,
    plant_duplicates,
)


def _documents(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        f"doc {i}: " + " ".join(rng.choice("abcdefgh") * rng.randint(1, 5) for _ in range(60))
        for i in range(count)
    ]


def test_planted_counts_are_exact_and_the_rest_appear_once():
    docs = _documents(200)
    heldout = docs[:10]
    # The raw training text repeats some documents (with stray whitespace) and overlaps the held-out set.
    train = docs[5:] + [f"  {d}\n" for d in docs[20:30]] + docs[40:43]
    counts = (1, 4, 16, 64)
    corpus = plant_duplicates(train, heldout, counts, documents_per_count=7, seed=3)

    unique = set(docs[10:])  # exact duplicates merged, held-out documents dropped
    assert sorted(corpus.deduplicated) == sorted(unique)
    assert corpus.heldout == heldout
    planted = [doc for k in counts for doc in corpus.groups[k]]
    assert len(planted) == len(set(planted)) == 7 * len(counts)  # disjoint groups
    assert set(planted) <= unique
    copies = Counter(corpus.duplicated)
    for k in counts:
        assert [copies[doc] for doc in corpus.groups[k]] == [k] * 7
    assert all(copies[doc] == 1 for doc in unique - set(planted))
    assert set(copies) == unique
    assert len(corpus.duplicated) == len(unique) + 7 * sum(k - 1 for k in counts)
    assert corpus.duplicated != sorted(corpus.duplicated, key=lambda d: -copies[d])  # shuffled, not blocks


def test_planting_is_seeded_and_respects_the_length_floor():
    docs = _documents(120) + ["short"] * 3 + [f"tiny {i}" for i in range(50)]
    first = plant_duplicates(docs, [], (2, 8), 10, seed=1, min_chars=100)
    again = plant_duplicates(docs, [], (2, 8), 10, seed=1, min_chars=100)
    other = plant_duplicates(docs, [], (2, 8), 10, seed=2, min_chars=100)
    assert first == again and first.groups != other.groups
    assert all(len(d) >= 100 for group in first.groups.values() for d in group)
    assert exact_dedup(["a", " a ", "", "b", "a\n"]) == ["a", "b"]


def test_the_embedded_corpus_holds_the_default_groups(cache_dir):
    cfg = DuplicationSection()
    corpus = load_planted_corpus(cfg)
    copies = Counter(corpus.duplicated)
    assert {k: {copies[d] for d in docs} for k, docs in corpus.groups.items()} == {k: {k} for k in cfg.counts}
    assert not set(corpus.heldout) & set(corpus.deduplicated)


def test_too_few_documents_and_bad_counts_are_refused(capsys, tmp_path):
    with pytest.raises(ConfigError, match="documents_per_count"):
        plant_duplicates(_documents(30), [], (1, 4, 16), 11, seed=0)
    with pytest.raises(ConfigError, match="strictly increasing"):
        DuplicationSection(counts=(4, 1))
    assert main([f"--duplication.output_root={tmp_path}", "--duplication.counts=[0,4]"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: duplication.counts")
    assert list(tmp_path.iterdir()) == []  # nothing written
