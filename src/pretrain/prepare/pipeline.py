"""Runs the stages over a `datasets` dataset and writes the clean dataset plus its report.

Every stage is one or two `Dataset.map` passes (parallel with `num_proc`, a progress bar each,
memory-mapped Arrow files on disk) that annotate each document with its output text and a removal
reason; `report.summarise_stage` counts the annotations and the kept rows go on to the next stage.
The dedup stages put a per-document key column (a hash, LSH band keys) on disk and find duplicates
with numpy over one such column at a time: 8 bytes per document, never the text.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow.compute as pc

from pretrain.config import ConfigError, save_config, to_dict
from pretrain.data.outputs import claim_output_dir, mark_output_dir
from pretrain.prepare.dedup import (
    ExactDedupConfig,
    drop_lines,
    first_occurrence,
    line_hashes,
    repeated_lines,
    text_hash,
)
from pretrain.prepare.executor_config import ExecutorConfig
from pretrain.prepare.io import InputConfig, load_inputs
from pretrain.prepare.langid import LangIdConfig, language_failure
from pretrain.prepare.minhash import NearDedupConfig, band_keys, cluster_duplicates, minhash_signatures
from pretrain.prepare.normalize import NormalizeConfig, normalize_text
from pretrain.prepare.pii import PII_TYPES, PIIConfig, redact
from pretrain.prepare.quality import QualityConfig, quality_failure
from pretrain.prepare.report import COUNTER_PREFIX, StageReport, render_summary, summarise_stage

STAGES = ("normalize", "exact_dedup", "near_dedup", "quality", "langid", "pii")


@dataclass(frozen=True)
class PipelineConfig:
    stages: tuple[str, ...] = ("normalize", "exact_dedup", "langid", "quality", "near_dedup", "pii")
    """Stages to run, in order; leave one out to switch it off. Names: the other config sections."""
    num_proc: int = 1
    """Worker processes for each pass over the data. Range [1, inf)."""
    batch_size: int = 1000
    """Documents per batch handed to a stage (and per MinHash numpy batch). Range [1, inf)."""
    examples_per_reason: int = 2
    """Removed documents quoted in the report for each removal reason. Range [0, inf)."""
    example_chars: int = 300
    """Characters kept of each quoted document. Range [0, inf)."""
    cache_dir: str = ""
    """Cache for Hub downloads and converted inputs; empty = a temporary folder, deleted at the end."""
    overwrite: bool = False
    """Replace an existing output directory instead of failing."""

    def __post_init__(self) -> None:
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown or not self.stages or len(set(self.stages)) != len(self.stages):
            raise ValueError(
                f"pipeline.stages={list(self.stages)}: use one or more of {list(STAGES)}, each once"
            )
        if self.num_proc < 1 or self.batch_size < 1:
            raise ValueError("pipeline.num_proc and pipeline.batch_size must be >= 1")


@dataclass(frozen=True)
class DataPipeConfig:
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    input: InputConfig = field(default_factory=InputConfig)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    exact_dedup: ExactDedupConfig = field(default_factory=ExactDedupConfig)
    near_dedup: NearDedupConfig = field(default_factory=NearDedupConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    langid: LangIdConfig = field(default_factory=LangIdConfig)
    pii: PIIConfig = field(default_factory=PIIConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)


def _nbytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _columns(
    texts: list[str], outputs: list[str], reasons: list[str], **counters: list[int]
) -> dict[str, list]:
    """A stage's annotation columns; removed documents keep their input text for the report's examples."""
    shown = [out if not reason else text for text, out, reason in zip(texts, outputs, reasons, strict=True)]
    return {
        "text": shown,
        "_reason": reasons,
        "_bytes_in": [_nbytes(t) for t in texts],
        "_bytes_out": [_nbytes(t) for t in shown],
        **{COUNTER_PREFIX + name: values for name, values in counters.items()},
    }


def _normalize_batch(batch: dict[str, list], cfg: NormalizeConfig) -> dict[str, list]:
    texts = [t or "" for t in batch["text"]]
    outputs = [normalize_text(t, cfg) for t in texts]
    reasons = ["" if out.strip() else "empty" for out in outputs]
    changed = [int(out != t and bool(out.strip())) for t, out in zip(texts, outputs, strict=True)]
    return _columns(texts, outputs, reasons, changed=changed)


def _quality_batch(batch: dict[str, list], cfg: QualityConfig) -> dict[str, list]:
    texts = [t or "" for t in batch["text"]]
    return _columns(texts, texts, [quality_failure(t, cfg) for t in texts])


def _langid_batch(batch: dict[str, list], cfg: LangIdConfig) -> dict[str, list]:
    texts = [t or "" for t in batch["text"]]
    return _columns(texts, texts, [language_failure(t, cfg) for t in texts])


def _pii_batch(batch: dict[str, list], cfg: PIIConfig) -> dict[str, list]:
    texts = [t or "" for t in batch["text"]]
    redacted = [redact(t, cfg.types) for t in texts]
    counters = {kind: [counts[kind] for _, counts in redacted] for kind in PII_TYPES if kind in cfg.types}
    return _columns(texts, [out for out, _ in redacted], [""] * len(texts), **counters)


def _duplicate_batch(
    batch: dict[str, list], indices: list[int], duplicate_of: np.ndarray, reason: str
) -> dict[str, list]:
    texts = [t or "" for t in batch["text"]]
    return _columns(texts, texts, [reason if duplicate_of[i] >= 0 else "" for i in indices])


def _line_dedup_batch(
    batch: dict[str, list],
    indices: list[int],
    duplicate_of: np.ndarray,
    drop: np.ndarray,
    line_start: np.ndarray,
) -> dict[str, list]:
    texts = [t or "" for t in batch["text"]]
    outputs, reasons, removed = [], [], []
    for text, i in zip(texts, indices, strict=True):
        gone = drop[line_start[i] : line_start[i + 1]]
        outputs.append(drop_lines(text, gone))
        reasons.append(
            "exact_duplicate" if duplicate_of[i] >= 0 else "" if outputs[-1].strip() else "repeated_lines"
        )
        removed.append(0 if reasons[-1] else int(gone.sum()))
    return _columns(texts, outputs, reasons, lines_removed=removed)


class _Runner:
    """Applies stages to a dataset, keeping the reports; map outputs go to `work_dir` when given."""

    def __init__(self, cfg: DataPipeConfig, work_dir: str | None = None) -> None:
        self.cfg, self.work_dir, self.reports, self._step = cfg, work_dir, [], 0
        self.stages: dict[str, Callable[[datasets.Dataset], datasets.Dataset]] = {
            "normalize": lambda ds: self._annotate(ds, "normalize", _normalize_batch, cfg=cfg.normalize),
            "quality": lambda ds: self._annotate(ds, "quality", _quality_batch, cfg=cfg.quality),
            "langid": lambda ds: self._annotate(ds, "langid", _langid_batch, cfg=cfg.langid),
            "pii": lambda ds: self._annotate(ds, "pii", _pii_batch, cfg=cfg.pii),
            "exact_dedup": self._exact_dedup,
            "near_dedup": self._near_dedup,
        }

    def _map(self, ds: datasets.Dataset, fn: Callable, desc: str, **kwargs: Any) -> datasets.Dataset:
        self._step += 1
        cache = f"{self.work_dir}/{self._step:02d}-{desc}.arrow" if self.work_dir else None
        p = self.cfg.pipeline
        num_proc = p.num_proc if p.num_proc > 1 else None
        return ds.map(
            fn, batched=True, batch_size=p.batch_size, num_proc=num_proc, desc=desc, cache_file_name=cache,
            load_from_cache_file=False, **kwargs,
        )  # fmt: skip

    def _annotate(
        self,
        ds: datasets.Dataset,
        name: str,
        fn: Callable,
        seconds: float = 0.0,
        with_indices: bool = False,
        **kw: Any,
    ) -> datasets.Dataset:
        """Run one annotating pass, report it, and keep the documents it did not remove."""
        start = time.perf_counter()
        annotated = self._map(ds, fn, name, fn_kwargs=kw, with_indices=with_indices)
        table = annotated.data.table
        p = self.cfg.pipeline
        report = summarise_stage(name, table, 0.0, p.examples_per_reason, p.example_chars)
        keep = pc.equal(table.column("_reason"), "").to_numpy(zero_copy_only=False)
        kept = annotated.select(np.flatnonzero(keep)).select_columns(["text"])
        report.seconds = round(seconds + time.perf_counter() - start, 3)
        self.reports.append(report)
        return kept

    def _exact_dedup(self, ds: datasets.Dataset) -> datasets.Dataset:
        start, lines = time.perf_counter(), self.cfg.exact_dedup.lines

        def hashes(batch: dict[str, list]) -> dict[str, list]:
            texts = [t or "" for t in batch["text"]]
            out = {"_hash": [text_hash(t) for t in texts]}
            return out | ({"_line_hashes": [line_hashes(t) for t in texts]} if lines else {})

        table = self._map(ds, hashes, "exact_dedup:hash", remove_columns=["text"]).data.table
        duplicate_of = first_occurrence(table.column("_hash").to_numpy())
        if not lines:
            return self._annotate(
                ds, "exact_dedup", _duplicate_batch, seconds=time.perf_counter() - start, with_indices=True,
                duplicate_of=duplicate_of, reason="exact_duplicate",
            )  # fmt: skip
        column = table.column("_line_hashes").combine_chunks()
        drop = repeated_lines(column.flatten().to_numpy())
        offsets = column.offsets.to_numpy().astype(np.int64)
        return self._annotate(
            ds, "exact_dedup", _line_dedup_batch, seconds=time.perf_counter() - start, with_indices=True,
            duplicate_of=duplicate_of, drop=drop, line_start=offsets - offsets[0],
        )  # fmt: skip

    def _near_dedup(self, ds: datasets.Dataset) -> datasets.Dataset:
        start, cfg = time.perf_counter(), self.cfg.near_dedup
        bands, rows = cfg.band_shape()

        def keys(batch: dict[str, list]) -> dict[str, np.ndarray]:
            per_band = band_keys(minhash_signatures([t or "" for t in batch["text"]], cfg), bands, rows)
            return {f"_band_{b}": per_band[:, b] for b in range(bands)}

        table = self._map(ds, keys, "near_dedup:minhash", remove_columns=["text"]).data.table
        columns = (table.column(f"_band_{b}").to_numpy() for b in range(bands))
        duplicate_of = cluster_duplicates(columns, table.num_rows)
        return self._annotate(
            ds, "near_dedup", _duplicate_batch, seconds=time.perf_counter() - start, with_indices=True,
            duplicate_of=duplicate_of, reason="near_duplicate",
        )  # fmt: skip


def run_stages(
    ds: datasets.Dataset, cfg: DataPipeConfig, work_dir: str | None = None
) -> tuple[datasets.Dataset, list[StageReport]]:
    """The dataset after every configured stage, and one report per stage, in order."""
    runner = _Runner(cfg, work_dir)
    for name in cfg.pipeline.stages:
        if len(ds) == 0:
            runner.reports.append(StageReport(name, 0, 0, 0, 0, 0))
            continue
        ds = runner.stages[name](ds)
    return ds, runner.reports


PREPARE_OUTPUT_FILES = ("report.json", "datapipe_config.yaml")  # prepare outputs from before the marker


def _check_output(output: Path, sources: list[str], overwrite: bool) -> None:
    """Refuse an output overlapping an input, a non-empty directory prepare did not write, and (without
    overwrite) one it did write."""
    ours = claim_output_dir(
        output, "data prepare", sources, legacy=PREPARE_OUTPUT_FILES, what="--output", create=False
    )
    if ours and any(output.iterdir()) and not overwrite:
        raise ConfigError(
            f"output directory {output} is not empty; pass --pipeline.overwrite=true to replace it"
        )


def _load(sources: list[str], cfg: DataPipeConfig, scratch: str) -> datasets.Dataset:
    """The inputs as one dataset; unreadable, malformed or empty inputs are a ConfigError."""
    try:
        ds = load_inputs(sources, cfg.input, cfg.pipeline.cache_dir or scratch)
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - datasets raises many types for empty or malformed files
        cause = err.__cause__ or err
        if type(cause).__name__ == "SchemaInferenceError":  # the generator yielded no document
            raise ConfigError(f"inputs {sources} hold no documents; give files with text in them") from None
        raise ConfigError(
            f"could not read inputs {sources} ({type(cause).__name__}: {str(cause)[:120]}); check that they "
            "exist, are in a supported format and hold text"
        ) from None
    if len(ds) == 0:
        raise ConfigError(f"inputs {sources} hold no documents; give files with text in them")
    return ds


def prepare(sources: list[str], output: str | Path, cfg: DataPipeConfig) -> dict[str, Any]:
    """Run the pipeline from input files to `output` (a `save_to_disk` dataset plus report.json/.md).

    Returns the report. Intermediate Arrow files live in a temporary folder beside `output`.
    """
    output = Path(output)
    _check_output(output, sources, cfg.pipeline.overwrite)
    output.parent.mkdir(parents=True, exist_ok=True)
    work_dir = tempfile.mkdtemp(prefix=f".{output.name}-work-", dir=output.parent)
    try:
        ds = _load(sources, cfg, f"{work_dir}/inputs")
        ds, reports = run_stages(ds, cfg, work_dir)
        if output.exists():
            shutil.rmtree(output)
        num_proc = cfg.pipeline.num_proc if 1 < cfg.pipeline.num_proc <= len(ds) else None
        # An empty dataset needs one explicit shard, or datasets writes none and cannot load it back.
        ds.save_to_disk(str(output), num_proc=num_proc, num_shards=1 if len(ds) == 0 else None)
        mark_output_dir(output, "data prepare")
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return write_report(sources, output, reports, cfg)


def write_report(
    sources: list[str], output: Path, reports: list[StageReport], cfg: DataPipeConfig
) -> dict[str, Any]:
    """Write report.json, report.md and datapipe_config.yaml into `output`; returns the report."""
    report = build_report(sources, output, reports, cfg)
    output.mkdir(parents=True, exist_ok=True)
    (output / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (output / "report.md").write_text(render_summary(report))
    save_config(cfg, output / "datapipe_config.yaml")
    return report


def build_report(
    sources: list[str], output: Path, reports: list[StageReport], cfg: DataPipeConfig
) -> dict[str, Any]:
    """The run's report: totals, one entry per stage, and the resolved config."""
    stages = [r.to_dict() for r in reports]
    return {
        "inputs": list(sources),
        "output": str(output),
        "documents_in": stages[0]["documents_in"],
        "bytes_in": stages[0]["bytes_in"],
        "documents_out": stages[-1]["documents_out"],
        "bytes_out": stages[-1]["bytes_out"],
        "stages": stages,
        "config": to_dict(cfg),
    }
