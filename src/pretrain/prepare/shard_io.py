"""Files in and out of the datatrove pipeline: input readers, the segment shards between executor
stages, the output shards, and the report merged over tasks and stages.

Input files are split over tasks whole (task r reads files r, r + tasks, ...), as datatrove's own
readers do. Output: `OUT/<rank>.jsonl.gz`, one JSON object `{"text", "id"}` per line, beside
`report.json`, `report.md` and `datapipe_config.yaml`; `prepared_shards(OUT)` finds the shards again.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import orjson
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.writers.jsonl import JsonlWriter

from pretrain.config import ConfigError
from pretrain.prepare.input_config import InputConfig, iter_txt_documents
from pretrain.prepare.report import EXAMPLE_REASONS, StageReport
from pretrain.prepare.steps import make_document

SHARD_GLOB = "*.jsonl.gz"
_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")
_FORMATS = {
    ".txt": "txt",
    ".text": "txt",
    ".md": "txt",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
}


def prepared_shards(path: str | Path) -> list[Path]:
    """The output shards of a `pretrain data prepare` directory (report.json + *.jsonl.gz), or []."""
    path = Path(path)
    if not (path.is_dir() and (path / "report.json").is_file()):
        return []
    return sorted(path.glob(SHARD_GLOB))


def _format(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s not in _COMPRESSIONS]
    kind = _FORMATS.get(suffixes[-1].lower() if suffixes else "")
    if kind is None or (kind == "txt" and path.suffix in _COMPRESSIONS):
        raise ConfigError(
            f"input {path}: the datatrove executors read .txt/.md, .jsonl/.json (optionally compressed) "
            "and .parquet; convert it or use --executor datasets"
        )
    return kind


def list_input_files(sources: list[str]) -> list[str]:
    """Every input file, in the order given (directories expanded, sorted); checks each format."""
    files: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            shards = prepared_shards(path)
            found = shards or sorted(f for f in path.rglob("*") if f.is_file() and not f.name.startswith("."))
            if not found:
                raise ConfigError(f"input directory {path} has no files")
            files += found
        elif path.exists():
            files.append(path)
        else:
            raise ConfigError(
                f"input {source} does not exist (Hub ids and saved datasets need --executor datasets)"
            )
    for file in files:
        _format(file)
    return [str(f) for f in files]


def iter_file_texts(path: str, cfg: InputConfig) -> Iterator[str]:
    """The documents' texts of one input file (missing or null text is "")."""
    kind = _format(Path(path))
    if kind == "txt":
        yield from (d["text"] for d in iter_txt_documents([path], cfg.txt_sample_by))
    elif kind == "jsonl":
        with fsspec.open(path, "rb", compression="infer") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    record = orjson.loads(line)
                    if cfg.text_column not in record:
                        raise ConfigError(
                            f"{path}:{number} has no key {cfg.text_column!r}; set --input.text_column"
                        )
                    yield record[cfg.text_column] or ""
    else:
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(columns=[cfg.text_column]):
            yield from (t or "" for t in batch.column(0).to_pylist())


class InputShardReader(PipelineStep):
    """Reads the input files of this task (files[rank::world_size]) as ordered Documents."""

    name, type = "input", "📖 - READER"

    def __init__(self, files: list[str], cfg: InputConfig) -> None:
        super().__init__()
        self.files, self.cfg = files, cfg

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for file_index in range(rank, len(self.files), world_size):
            for doc_index, text in enumerate(iter_file_texts(self.files[file_index], self.cfg)):
                self.stat_update("documents")
                yield make_document(text, file_index, doc_index)


def _segment_record(writer: Any, doc: Document) -> dict:
    return {"text": doc.text, "id": doc.id, "order": doc.metadata["order"]}


def _output_record(writer: Any, doc: Document) -> dict:
    return {"text": doc.text, "id": doc.id}


def segment_writer(folder: str) -> JsonlWriter:
    """Writes this task's documents to `folder/<rank>.jsonl.gz`, keeping their global order key."""
    return JsonlWriter(folder, output_filename="${rank}.jsonl.gz", adapter=_segment_record)


def output_writer(folder: str) -> JsonlWriter:
    """Writes this task's final documents to `OUT/<rank>.jsonl.gz` as {"text", "id"}."""
    return JsonlWriter(folder, output_filename="${rank}.jsonl.gz", adapter=_output_record)


class SegmentReader(PipelineStep):
    """Reads back what `segment_writer` wrote for this rank (nothing if that task had no documents)."""

    name, type = "segment", "📖 - READER"

    def __init__(self, folder: str) -> None:
        super().__init__()
        self.folder = folder

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        path = Path(self.folder) / f"{rank:05d}.jsonl.gz"
        if not path.exists():
            return
        with fsspec.open(str(path), "rb", compression="gzip") as f:
            for line in f:
                record = orjson.loads(line)
                yield Document(text=record["text"], id=record["id"], metadata={"order": record["order"]})


def merge_tallies(folder: Path, name: str, per_reason: int) -> StageReport:
    """One stage's report from every task's and part's tally file under `folder/<name>/`."""
    report = StageReport(name, 0, 0, 0, 0, 0)
    reasons: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    examples: list[dict[str, str]] = []
    for file in sorted((folder / name).glob("*.json"), key=lambda f: (f.stem.split("-")[1], f.stem)):
        part = json.loads(file.read_text())
        for key in ("documents_in", "documents_out", "bytes_in", "bytes_out", "bytes_removed"):
            setattr(report, key, getattr(report, key) + part[key])
        reasons.update(part["removed_by_reason"])
        for key, value in part["counts"].items():
            counts[key] += value
        examples += part["examples"]
        report.seconds += part["seconds"]
    report.removed_by_reason = dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
    report.counts = dict(counts)
    quoted = list(report.removed_by_reason)[:EXAMPLE_REASONS]
    report.examples = [e for r in quoted for e in [x for x in examples if x["reason"] == r][:per_reason]]
    report.seconds = round(report.seconds, 3)
    return report


class ReportStep(PipelineStep):
    """The last stage (one task): report.json / report.md / datapipe_config.yaml in OUT, then the
    intermediate segments are deleted (the tallies and completion markers stay, for resuming)."""

    name, type = "report", "📊 - STATS"

    def __init__(self, sources: list[str], output: str, work: str, cfg: Any) -> None:
        super().__init__()
        self.sources, self.output, self.work, self.cfg = sources, output, work, cfg

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from pretrain.prepare.pipeline import write_report

        per_reason = self.cfg.pipeline.examples_per_reason
        reports = [
            merge_tallies(Path(self.work) / "reports", s, per_reason) for s in self.cfg.pipeline.stages
        ]
        write_report(self.sources, Path(self.output), reports, self.cfg)
        for segment in Path(self.work).glob("segment-*"):
            shutil.rmtree(segment)
        yield from data or ()
