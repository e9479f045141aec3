"""The near-dedup benchmark script runs end to end on a small corpus it is given."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_dedup", REPO / "benchmarks" / "bench_dedup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_dedup_runs_and_finds_the_planted_pairs(tmp_path, capsys):
    bench = _load_bench()
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(3000)]
    lines = [" = Heading = "] + [" ".join(rng.choices(vocab, k=60)) for _ in range(60)]
    corpus = tmp_path / "wiki.txt"
    corpus.write_text("\n".join(lines) + "\n")
    docs, planted = bench.plant_near_duplicates(bench.load_paragraphs(corpus), 0.017, seed=0)
    assert len(docs) == 120 and len(planted) == 60
    assert bench.main(["--wikitext", str(corpus), "--repeats", "1", "--edit-rate", "0.005"]) == 0
    rows = [
        line.split()
        for line in capsys.readouterr().out.splitlines()
        if line.startswith(("datasketch", "ours"))
    ]
    assert len(rows) == 3
    assert all(float(row[-2]) > 0.8 and float(row[-1]) > 0.9 for row in rows)  # recall, precision


def test_bench_dedup_reports_a_missing_corpus(tmp_path):
    assert _load_bench().main(["--wikitext", str(tmp_path / "absent.txt")]) == 2
