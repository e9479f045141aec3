"""`pretrain data prepare` benchmark, side by side in one process:

1. whole pipeline (all default stages), documents/s: today's `--executor datasets` path against ours
   on datatrove's local executor with 1 and 2 workers (4 tasks);
2. near dedup alone on the same planted data: our MinHash (signatures -> band keys -> clusters) against
   datatrove's four MinHash stages (MinhashDedupSignature/Buckets/Cluster/Filter, 14 x 8, sha1 hashes
   and a whitespace word tokenizer: its default needs spaCy and fails with xxhash 4.x), both on
   datatrove's local executor; docs/s, recall and precision of the planted pairs;
3. the cluster stage's cost (one task, numpy + scipy connected components): time and peak memory per
   document and per candidate edge, extrapolated to a billion documents.

Data: wikitext-2 paragraphs, each with a planted near-duplicate (bench_dedup.plant_near_duplicates).

    .venv/bin/python benchmarks/bench_prepare.py [--wikitext PATH] [--limit 2000] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import tracemalloc
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from bench_dedup import default_wikitext, load_paragraphs, plant_near_duplicates, score

from pretrain.config import parse_config
from pretrain.prepare.executors import run_prepare
from pretrain.prepare.minhash import NearDedupConfig, clusters_from_edges
from pretrain.prepare.pipeline import DataPipeConfig


@contextmanager
def quiet_stderr():
    """datatrove logs every task at INFO to stderr; keep the benchmark's table readable."""
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def write_shards(docs: list[str], folder: Path, shards: int = 4) -> list[str]:
    folder.mkdir(parents=True)
    paths = []
    for i in range(shards):
        path = folder / f"part{i}.jsonl"
        path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs[i::shards]))
        paths.append(str(path))
    return paths


def whole_pipeline(docs: list[str], root: Path, repeats: int) -> None:
    inputs = write_shards(docs, root / "raw")
    runs = {
        "datasets path (today)": ["--executor.name=datasets"],
        "datatrove local, 1 worker": ["--executor.tasks=4", "--executor.workers=1"],
        "datatrove local, 2 workers": ["--executor.tasks=4", "--executor.workers=2"],
    }
    best: dict[str, float] = {}
    for repeat in range(repeats):
        for name, args in runs.items():
            out = root / f"out-{repeat}-{len(best)}-{abs(hash(name))}"
            cfg = parse_config(DataPipeConfig, args)
            start = time.perf_counter()
            with quiet_stderr():
                report = run_prepare(inputs, out, cfg)
            best[name] = min(best.get(name, np.inf), time.perf_counter() - start)
    kept = report["documents_out"]
    print(
        f"\nwhole pipeline, default stages, {len(docs)} documents in 4 shards ({kept} kept), best of {repeats}"
    )
    print(f"{'run':<30}{'seconds':>9}{'docs/s':>9}{'vs datasets':>13}")
    base = len(docs) / best["datasets path (today)"]
    for name, seconds in best.items():
        rate = len(docs) / seconds
        print(f"{name:<30}{seconds:>9.1f}{rate:>9.0f}{rate / base:>12.2f}x")


class _Whitespace:
    """Lower-cased whitespace words, the shingling our MinHash uses (datatrove's default is spaCy)."""

    def word_tokenize(self, text: str) -> list[str]:
        return text.lower().split()


def _run_stages(stages: list[list], work: Path, tasks: tuple[int, ...] = (1, 1, 1, 1)) -> None:
    from datatrove.executor import LocalPipelineExecutor

    for i, (steps, n) in enumerate(zip(stages, tasks, strict=True)):
        LocalPipelineExecutor(steps, tasks=n, workers=1, logging_dir=str(work / f"logs-{i}")).run()


def ours_near(path: str, work: Path, cfg: NearDedupConfig) -> np.ndarray:
    """Our four stages on datatrove's local executor; returns cluster labels over the candidate edges."""
    from pretrain.prepare.io import InputConfig
    from pretrain.prepare.shard_io import InputShardReader
    from pretrain.prepare.steps import (
        MinhashBucketStep,
        MinhashClusterStep,
        MinhashSignatureStep,
        NearFilterStep,
    )

    w = str(work)
    _run_stages(
        [
            [InputShardReader([path], InputConfig()), MinhashSignatureStep(w, cfg, 1000)],
            [MinhashBucketStep(w, cfg.band_shape()[0])],
            [MinhashClusterStep(w)],
            [InputShardReader([path], InputConfig()), NearFilterStep(w)],
        ],
        work,
    )
    with np.load(work / "near_dedup" / "signatures" / "00000.npz") as npz:
        num_docs = len(npz["orders"])
    with np.load(work / "near_dedup" / "buckets" / "00000.npz") as npz:
        return clusters_from_pairs(list(zip(npz["src"].tolist(), npz["dst"].tolist(), strict=True)), num_docs)


def datatrove_near(path: str, work: Path, cfg: NearDedupConfig) -> np.ndarray:
    """datatrove's MinhashDedupSignature/Buckets/Cluster/Filter with its default text normalisation;
    returns its candidate pairs (.dups files)."""
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.word_tokenizers import WordTokenizer

    from pretrain.prepare.io import InputConfig
    from pretrain.prepare.shard_io import InputShardReader

    tokenizer = type(
        "Whitespace", (_Whitespace, WordTokenizer), {"sent_tokenize": None, "span_tokenize": None}
    )()
    bands, rows = cfg.band_shape()
    mh = MinhashConfig(n_grams=cfg.ngram, num_buckets=bands, hashes_per_bucket=rows, seed=cfg.seed,
                       hash_config=HashConfig(precision=64, hash_fc="sha1"))  # fmt: skip
    sigs, buckets, clusters = (str(work / name) for name in ("sigs", "buckets", "clusters"))
    _run_stages(
        [
            [InputShardReader([path], InputConfig()), MinhashDedupSignature(sigs, mh, language=tokenizer)],
            [MinhashDedupBuckets(sigs, buckets, config=mh)],
            [MinhashDedupCluster(buckets, clusters, config=mh)],
            [InputShardReader([path], InputConfig()), MinhashDedupFilter(clusters)],
        ],
        work,
        tasks=(1, bands, 1, 1),  # its bucket stage runs one task per band
    )
    pairs = []
    for dups in sorted((work / "buckets").glob("*.dups")):
        quads = np.fromfile(dups, dtype="<u4").reshape(-1, 4)
        pairs += list(zip(quads[:, 1].tolist(), quads[:, 3].tolist(), strict=True))
    return pairs


def clusters_from_pairs(pairs: list[tuple[int, int]], num_docs: int) -> np.ndarray:
    """Connected-component label per document (the first document's index)."""
    src = np.array([a for a, _ in pairs], dtype=np.int64)
    dst = np.array([b for _, b in pairs], dtype=np.int64)
    first = clusters_from_edges(src, dst, num_docs)
    return np.where(first < 0, np.arange(num_docs), first)


def near_dedup(docs: list[str], planted: list, root: Path, repeats: int) -> None:
    path = write_shards(docs, root / "near-raw", shards=1)[0]
    cfg = NearDedupConfig()
    best, labels = {}, {}
    for repeat in range(repeats):
        for name, method in (("ours", ours_near), ("datatrove MinHash", datatrove_near)):
            start = time.perf_counter()
            with quiet_stderr():
                found = method(path, root / f"near-{name.split()[0]}-{repeat}", cfg)
            best[name] = min(best.get(name, np.inf), time.perf_counter() - start)
            labels[name] = found if isinstance(found, np.ndarray) else clusters_from_pairs(found, len(docs))
    print(f"\nnear dedup, 4 stages on datatrove's local executor, {len(docs)} documents, "
          f"{len(planted)} planted pairs, 14 x 8 bands, word 5-grams, best of {repeats}")  # fmt: skip
    print(f"{'method':<20}{'seconds':>9}{'docs/s':>9}{'speed':>8}{'recall':>8}{'precision':>11}")
    base = len(docs) / best["datatrove MinHash"]
    for name, seconds in best.items():
        recall, precision = score(labels[name], planted)
        rate = len(docs) / seconds
        print(f"{name:<20}{seconds:>9.1f}{rate:>9.0f}{rate / base:>7.2f}x{recall:>8.3f}{precision:>11.3f}")


def cluster_cost(num_docs: int = 2_000_000) -> None:
    """Time and peak traced memory of the cluster stage's numpy/scipy work, with 0 and 1 edge per doc."""
    rng = np.random.default_rng(0)
    orders = rng.permutation(num_docs).astype(np.int64) << 8
    results = {}
    for edges_per_doc in (0, 1):
        n_edges = edges_per_doc * num_docs
        src, dst = orders[rng.integers(0, num_docs, n_edges)], orders[rng.integers(0, num_docs, n_edges)]
        tracemalloc.start()
        start = time.perf_counter()
        ordered = np.sort(orders)
        first = clusters_from_edges(np.searchsorted(ordered, src), np.searchsorted(ordered, dst), num_docs)
        removed = ordered[first >= 0]
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        results[edges_per_doc] = (seconds, peak, len(removed))
    (t0, m0, _), (t1, m1, _) = results[0], results[1]
    per_doc_s, per_doc_b = t0 / num_docs, m0 / num_docs
    per_edge_s, per_edge_b = (t1 - t0) / num_docs, (m1 - m0) / num_docs
    print(f"\ncluster stage (one task), {num_docs:,} documents: {per_doc_b:.0f} B and {per_doc_s * 1e6:.2f} us per "
          f"document + {per_edge_b:.0f} B and {per_edge_s * 1e6:.2f} us per candidate edge")  # fmt: skip
    billion = 1e9
    print(f"per billion documents with one edge each: {(per_doc_b + per_edge_b) * billion / 1e9:.0f} GB peak, "
          f"{(per_doc_s + per_edge_s) * billion / 3600:.1f} h on one core")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wikitext", type=Path, default=default_wikitext(), help="a wikitext-2 .txt file")
    parser.add_argument("--limit", type=int, default=2000, help="wikitext paragraphs used (each gets a copy)")
    parser.add_argument(
        "--edit-rate", type=float, default=0.017, help="probability that a copy's word is edited"
    )
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per method; the best counts")
    parser.add_argument(
        "--cluster-docs", type=int, default=2_000_000, help="documents in the cluster-cost run"
    )
    args = parser.parse_args(argv)
    if not args.wikitext.is_file():
        print(f"error: bench_prepare: {args.wikitext} not found; pass --wikitext PATH", file=sys.stderr)
        return 2
    paragraphs = load_paragraphs(args.wikitext)[: args.limit]
    docs, planted = plant_near_duplicates(paragraphs, args.edit_rate, seed=0)
    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
        whole_pipeline(docs, Path(tmp), args.repeats)
        near_dedup(docs, planted, Path(tmp), args.repeats)
    cluster_cost(args.cluster_docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
