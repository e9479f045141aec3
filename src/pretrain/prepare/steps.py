"""Our stages as datatrove pipeline steps: the same rule functions, thresholds and removal reasons as
`pipeline.py`, run by datatrove's executors (local pool, Slurm arrays, Ray) over `tasks` shards.

Every document carries `metadata["order"]` = (input file index << 40) | index in its file, so "the
first copy" means the same document whatever the number of tasks. Per-document stages (normalize,
langid, quality, pii) are one `DocumentStage` each. The dedups are global across tasks and split
into executor stages (see executors.py): exact = hash (end of one segment) -> filter (start of the
next); near = signatures -> buckets -> clusters -> filter, datatrove's MinHash design (FineWeb).
Each step writes its share of the report to `reports/<stage>/<part>-<rank>.json`; `ReportStep`
merges them. Intermediate arrays are `.npz` files on a filesystem that every task sees.
"""

from __future__ import annotations

import glob
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from pretrain.prepare.dedup import drop_lines, first_occurrence, line_hashes, repeated_lines, text_hash
from pretrain.prepare.langid import language_failure
from pretrain.prepare.minhash import (
    NearDedupConfig,
    band_keys,
    clusters_from_edges,
    collision_edges,
    minhash_signatures,
)
from pretrain.prepare.normalize import normalize_text
from pretrain.prepare.pii import PII_TYPES, redact
from pretrain.prepare.quality import quality_failure

Rule = Callable[[str, Any], tuple[str, str, dict[str, int]]]
"""(text, stage config) -> (output text, removal reason or "", per-document counters)."""


def _normalize(text: str, cfg: Any) -> tuple[str, str, dict[str, int]]:
    out = normalize_text(text, cfg)
    return out, "" if out.strip() else "empty", {"changed": int(out != text and bool(out.strip()))}


def _pii(text: str, cfg: Any) -> tuple[str, str, dict[str, int]]:
    out, counts = redact(text, cfg.types)
    return out, "", {kind: counts[kind] for kind in PII_TYPES if kind in cfg.types}


RULES: dict[str, Rule] = {
    "normalize": _normalize,
    "quality": lambda text, cfg: (text, quality_failure(text, cfg), {}),
    "langid": lambda text, cfg: (text, language_failure(text, cfg), {}),
    "pii": _pii,
}


def _nbytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _save_atomic(path: Path, save: Callable[[str], None]) -> None:
    """Write through a temporary name so that a killed task never leaves a half file under `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")  # numpy keeps a .npz/.npy suffix
    save(str(tmp))
    os.replace(tmp, path)


class StageTally:
    """One task's share of a stage's report (the fields of report.StageReport), summed over tasks later."""

    def __init__(self, per_reason: int, chars: int) -> None:
        self.per_reason, self.chars = per_reason, chars
        self.totals = dict.fromkeys(
            ("documents_in", "documents_out", "bytes_in", "bytes_out", "bytes_removed"), 0
        )
        self.removed_by_reason: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.examples: list[dict[str, str]] = []
        self.seconds = 0.0

    def add(self, text: str, out: str, reason: str, counters: dict[str, int]) -> None:
        """Account one document: its input text, output text, removal reason and counters."""
        self.totals["documents_in"] += 1
        self.totals["bytes_in"] += _nbytes(text)
        for key, value in counters.items():
            self.counts[key] += value
        if not reason:
            self.totals["documents_out"] += 1
            self.totals["bytes_out"] += _nbytes(out)
            return
        self.totals["bytes_removed"] += _nbytes(text)
        self.removed_by_reason[reason] += 1
        if self.removed_by_reason[reason] <= self.per_reason:
            clipped = text if len(text) <= self.chars else text[: self.chars] + " …"
            self.examples.append({"reason": reason, "text": clipped})

    def save(self, path: Path) -> None:
        body = {**self.totals, "removed_by_reason": dict(self.removed_by_reason), "counts": dict(self.counts)}
        body |= {"examples": self.examples, "seconds": self.seconds}
        _save_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(body, ensure_ascii=False)))


class _Step(PipelineStep):
    """A step that keeps a StageTally and saves it under `work/reports/<stage>/<part>-<rank>.json`."""

    type = "pretrain"

    def __init__(self, stage: str, part: str, work: str, per_reason: int = 2, chars: int = 300) -> None:
        self.name = f"{stage}:{part}"
        super().__init__()
        self.stage, self.part, self.work = stage, part, Path(work)
        self.per_reason, self.chars = per_reason, chars

    def new_tally(self) -> StageTally:
        return StageTally(self.per_reason, self.chars)

    def save_tally(self, tally: StageTally, rank: int) -> None:
        tally.save(self.work / "reports" / self.stage / f"{self.part}-{rank:05d}.json")


class DocumentStage(_Step):
    """normalize, langid, quality or pii: one rule per document (RULES), removed documents dropped."""

    def __init__(self, stage: str, cfg: Any, work: str, per_reason: int = 2, chars: int = 300) -> None:
        super().__init__(stage, "apply", work, per_reason, chars)
        self.cfg = cfg

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        tally, rule = self.new_tally(), RULES[self.stage]
        for doc in data:
            start = time.perf_counter()
            out, reason, counters = rule(doc.text, self.cfg)
            tally.seconds += time.perf_counter() - start
            tally.add(doc.text, out, reason, counters)
            self.stat_update(reason or "kept")
            if not reason:
                doc.text = out
                yield doc
        self.save_tally(tally, rank)


class ExactHashStep(_Step):
    """Exact dedup, stage 1: each task records (order, document hash[, line hashes]) of its documents."""

    def __init__(self, work: str, lines: bool) -> None:
        super().__init__("exact_dedup", "hash", work)
        self.lines = lines

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        tally, orders, hashes, lines, counts = self.new_tally(), [], [], [], []
        for doc in data:
            start = time.perf_counter()
            orders.append(doc.metadata["order"])
            hashes.append(text_hash(doc.text))
            if self.lines:
                lines.append(line_hashes(doc.text))
                counts.append(len(lines[-1]))
            tally.seconds += time.perf_counter() - start
            yield doc
        flat = np.concatenate([np.asarray(h, np.int64) for h in lines]) if lines else np.zeros(0, np.int64)
        arrays = {"orders": np.asarray(orders, np.int64), "hashes": np.asarray(hashes, np.int64)}
        arrays |= {"lines": flat, "line_counts": np.asarray(counts, np.int64)}
        _save_atomic(self.work / "exact_dedup" / f"{rank:05d}.npz", lambda tmp: np.savez(tmp, **arrays))
        self.save_tally(tally, rank)


def _load_all(folder: Path, keys: tuple[str, ...]) -> dict[str, list[np.ndarray]]:
    arrays: dict[str, list[np.ndarray]] = {key: [] for key in keys}
    for file in sorted(glob.glob(str(folder / "*.npz"))):
        with np.load(file) as npz:
            for key in keys:
                arrays[key].append(npz[key])
    return arrays


class ExactFilterStep(_Step):
    """Exact dedup, stage 2: every task reads all tasks' hashes (16 bytes per document, 8 per line) and
    drops its documents (and, with `lines`, its lines) whose first copy in the global order is elsewhere."""

    def __init__(self, work: str, lines: bool, per_reason: int = 2, chars: int = 300) -> None:
        super().__init__("exact_dedup", "filter", work, per_reason, chars)
        self.lines = lines

    def _decisions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(orders sorted, duplicate flag, line start, line drop mask), all in global order."""
        got = _load_all(self.work / "exact_dedup", ("orders", "hashes", "lines", "line_counts"))
        orders, hashes = np.concatenate(got["orders"]), np.concatenate(got["hashes"])
        by_order = np.argsort(orders, kind="stable")
        duplicate = first_occurrence(hashes[by_order]) >= 0
        if not self.lines:
            return orders[by_order], duplicate, np.zeros(0, np.int64), np.zeros(0, bool)
        counts = np.concatenate(got["line_counts"])
        file_start = np.concatenate(([0], np.cumsum(counts)[:-1]))
        lengths = counts[by_order]
        start = np.concatenate(([0], np.cumsum(lengths)))
        gather = np.repeat(file_start[by_order] - start[:-1], lengths) + np.arange(start[-1])
        drop = repeated_lines(np.concatenate(got["lines"])[gather])
        return orders[by_order], duplicate, start, drop

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        tally = self.new_tally()
        start = time.perf_counter()
        orders, duplicate, line_start, drop = self._decisions()
        tally.seconds += time.perf_counter() - start
        for doc in data:
            pos = int(np.searchsorted(orders, doc.metadata["order"]))
            out, reason, counters = doc.text, "exact_duplicate" if duplicate[pos] else "", {}
            if self.lines:
                gone = drop[line_start[pos] : line_start[pos + 1]]
                out = doc.text if reason else drop_lines(doc.text, gone)
                reason = reason or ("" if out.strip() else "repeated_lines")
                counters = {"lines_removed": 0 if reason else int(gone.sum())}
            tally.add(doc.text, out, reason, counters)
            if not reason:
                doc.text = out
                yield doc
        self.save_tally(tally, rank)


class MinhashSignatureStep(_Step):
    """Near dedup, stage 1: our MinHash signatures, as LSH band keys (8 bytes per band per document)."""

    def __init__(self, work: str, cfg: NearDedupConfig, batch_size: int) -> None:
        super().__init__("near_dedup", "signatures", work)
        self.cfg, self.batch_size = cfg, batch_size

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        tally, bands, rows = self.new_tally(), *self.cfg.band_shape()
        orders, keys, batch = [], [np.zeros((0, bands), np.uint64)], []

        def flush() -> list[Document]:
            start = time.perf_counter()
            keys.append(band_keys(minhash_signatures([d.text for d in batch], self.cfg), bands, rows))
            orders.extend(d.metadata["order"] for d in batch)
            tally.seconds += time.perf_counter() - start
            return batch

        for doc in data:
            batch.append(doc)
            if len(batch) == self.batch_size:
                yield from flush()
                batch = []
        if batch:
            yield from flush()
        arrays = {"orders": np.asarray(orders, np.int64), "keys": np.concatenate(keys)}
        _save_atomic(
            self.work / "near_dedup" / "signatures" / f"{rank:05d}.npz", lambda t: np.savez(t, **arrays)
        )
        self.save_tally(tally, rank)


class MinhashBucketStep(_Step):
    """Near dedup, stage 2: task r takes bands r, r + tasks, ... of every signature file and writes the
    (order, order) pairs that share a bucket (chained, so a bucket of k documents gives k - 1 edges)."""

    def __init__(self, work: str, bands: int) -> None:
        super().__init__("near_dedup", "buckets", work)
        self.bands = bands

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        tally, start = self.new_tally(), time.perf_counter()
        files = sorted(glob.glob(str(self.work / "near_dedup" / "signatures" / "*.npz")))
        orders = np.concatenate([np.zeros(0, np.int64)] + [np.load(f)["orders"] for f in files])
        mine = list(range(rank, self.bands, world_size))
        keys = np.concatenate(
            [np.zeros((0, len(mine)), np.uint64)] + [np.load(f)["keys"][:, mine] for f in files]
        )
        src, dst = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for column in range(len(mine)):
            s, d = collision_edges(keys[:, column])
            src.append(orders[s])
            dst.append(orders[d])
        edges = {"src": np.concatenate(src), "dst": np.concatenate(dst)}
        _save_atomic(self.work / "near_dedup" / "buckets" / f"{rank:05d}.npz", lambda t: np.savez(t, **edges))
        tally.seconds = time.perf_counter() - start
        self.save_tally(tally, rank)
        yield from data or ()


class MinhashClusterStep(_Step):
    """Near dedup, stage 3 (one task): connected components over all edges; every document but the
    first (lowest order) of its component is listed in `remove.npy`.

    Cost (benchmarks/bench_prepare.py, 2M documents, 2 busy cores): 37 B and 0.17 us per document plus
    32 B and 6.2 us per candidate edge, so a billion documents with one edge each need ~69 GB peak and
    ~1.8 h on one core, on one machine. numpy/scipy rather than datatrove's per-pair Python union-find,
    the stage datatrove issue #106 names its bottleneck.
    """

    def __init__(self, work: str) -> None:
        super().__init__("near_dedup", "clusters", work)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        tally, start, folder = self.new_tally(), time.perf_counter(), self.work / "near_dedup"
        orders = np.sort(
            np.concatenate([np.zeros(0, np.int64)] + _load_all(folder / "signatures", ("orders",))["orders"])
        )
        edges = _load_all(folder / "buckets", ("src", "dst"))
        src = np.searchsorted(orders, np.concatenate([np.zeros(0, np.int64)] + edges["src"]))
        dst = np.searchsorted(orders, np.concatenate([np.zeros(0, np.int64)] + edges["dst"]))
        removed = orders[clusters_from_edges(src, dst, len(orders)) >= 0]
        _save_atomic(folder / "remove.npy", lambda tmp: np.save(tmp, removed))
        tally.seconds = time.perf_counter() - start
        self.save_tally(tally, rank)
        yield from data or ()


class NearFilterStep(_Step):
    """Near dedup, stage 4: drop the documents the cluster stage listed."""

    def __init__(self, work: str, per_reason: int = 2, chars: int = 300) -> None:
        super().__init__("near_dedup", "filter", work, per_reason, chars)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        tally = self.new_tally()
        removed = set(np.load(self.work / "near_dedup" / "remove.npy").tolist())
        for doc in data:
            reason = "near_duplicate" if doc.metadata["order"] in removed else ""
            tally.add(doc.text, doc.text, reason, {})
            if not reason:
                yield doc
        self.save_tally(tally, rank)


def make_document(text: str, file_index: int, doc_index: int) -> Document:
    """A datatrove Document whose `order` metadata sorts by (input file, position in file)."""
    return Document(
        text=text, id=f"{file_index}/{doc_index}", metadata={"order": file_index << 40 | doc_index}
    )
