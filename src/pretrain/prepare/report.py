"""What each stage removed: document and byte counts, reasons, counters and examples, as JSON and Markdown.

A stage's annotated table has one row per input document with the columns `text` (output text, or
the original text of a removed document), `_reason` ("" = kept, else why it was removed),
`_bytes_in`, `_bytes_out` (UTF-8 bytes) and any `_n_<counter>` columns (per-document counts such as
PII replacements) that the report sums.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

COUNTER_PREFIX = "_n_"
EXAMPLE_REASONS = 10
"""Removal reasons (the most frequent) that the report quotes examples of."""
SUMMARY_LINES = 6
"""Reasons, counters and examples listed per stage in the Markdown summary."""


@dataclass
class StageReport:
    """Counts for one stage. documents_in = documents_out + documents_removed always holds."""

    name: str
    documents_in: int
    documents_out: int
    bytes_in: int
    bytes_out: int
    bytes_removed: int
    """UTF-8 bytes of the removed documents, measured on the stage's input."""
    removed_by_reason: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    """Stage-specific totals: documents changed by normalisation, PII replacements by type."""
    examples: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def documents_removed(self) -> int:
        return self.documents_in - self.documents_out

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["documents_removed"] = self.documents_removed
        return out


def _sum(array: pa.ChunkedArray) -> int:
    return int(pc.sum(array).as_py() or 0)


def _clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[:chars] + " …"


def _examples(table: pa.Table, reasons: list[str], per_reason: int, chars: int) -> list[dict[str, str]]:
    """The first `per_reason` removed documents of each reason, clipped to `chars` characters."""
    wanted = dict.fromkeys(reasons, per_reason)
    found: list[dict[str, str]] = []
    offset = 0
    for chunk in table.column("_reason").chunks:
        for i, reason in enumerate(chunk.to_pylist()):
            if wanted.get(reason, 0) > 0:
                wanted[reason] -= 1
                found.append(
                    {"reason": reason, "text": _clip(table.column("text")[offset + i].as_py(), chars)}
                )
        offset += len(chunk)
        if not any(wanted.values()):
            break
    return found


def summarise_stage(
    name: str, table: pa.Table, seconds: float, per_reason: int = 2, chars: int = 300
) -> StageReport:
    """Aggregate one stage's annotated table (see the module docstring) into its report."""
    removed = pc.not_equal(table.column("_reason"), "")
    reasons = pc.value_counts(pc.filter(table.column("_reason"), removed)).to_pylist()
    by_reason = {r["values"]: int(r["counts"]) for r in sorted(reasons, key=lambda r: -r["counts"])}
    bytes_in = table.column("_bytes_in")
    return StageReport(
        name=name,
        documents_in=table.num_rows,
        documents_out=table.num_rows - sum(by_reason.values()),
        bytes_in=_sum(bytes_in),
        bytes_out=_sum(pc.filter(table.column("_bytes_out"), pc.invert(removed))),
        bytes_removed=_sum(pc.filter(bytes_in, removed)),
        removed_by_reason=by_reason,
        counts={
            column.removeprefix(COUNTER_PREFIX): _sum(table.column(column))
            for column in table.column_names
            if column.startswith(COUNTER_PREFIX)
        },
        examples=_examples(table, list(by_reason)[:EXAMPLE_REASONS], per_reason, chars),
        seconds=round(seconds, 3),
    )


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.2f}"


def render_summary(report: dict[str, Any]) -> str:
    """A short Markdown summary of a run's report: one row per stage, then reasons and examples."""
    lines = [
        f"# Data pipeline report: {report['output']}",
        "",
        f"{report['documents_in']} documents ({_megabytes(report['bytes_in'])} MB) in, "
        f"{report['documents_out']} documents ({_megabytes(report['bytes_out'])} MB) out.",
        "",
        "| stage | docs in | docs out | removed | MB in | MB out | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in report["stages"]:
        lines.append(
            f"| {s['name']} | {s['documents_in']} | {s['documents_out']} | {s['documents_removed']} | "
            f"{_megabytes(s['bytes_in'])} | {_megabytes(s['bytes_out'])} | {s['seconds']:.1f} |"
        )
    for s in report["stages"]:
        lines += _stage_details(s)
    return "\n".join(lines) + "\n"


def _stage_details(stage: dict[str, Any]) -> list[str]:
    reasons = list(stage["removed_by_reason"].items())
    counts = [(key, n) for key, n in stage["counts"].items() if n]
    if not (reasons or counts):
        return []
    lines = ["", f"## {stage['name']}", ""]
    lines += [f"- removed, {reason}: {n}" for reason, n in reasons[:SUMMARY_LINES]]
    if len(reasons) > SUMMARY_LINES:
        rest = sum(n for _, n in reasons[SUMMARY_LINES:])
        lines.append(f"- removed, {len(reasons) - SUMMARY_LINES} other reasons: {rest}")
    lines += [f"- {key}: {n}" for key, n in counts]
    for example in stage["examples"][:SUMMARY_LINES]:
        lines.append(f"- example ({example['reason']}): {' '.join(example['text'].split())[:160]}")
    return lines
