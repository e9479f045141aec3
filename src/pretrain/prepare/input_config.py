"""The `input` config section and the plain-text document splitter, without `datasets` (so that
datatrove's task processes, which unpickle the steps, do not import it: ~3 s each on a busy machine)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class InputConfig:
    text_column: str = "text"
    """Column holding the text in jsonl / parquet / saved / Hub inputs; the output column is always `text`."""
    txt_sample_by: Literal["line", "paragraph", "document"] = "paragraph"
    """How a .txt file splits into documents: per line, per block between blank lines, or one per file."""
    split: str = "train"
    """Split read from a Hub dataset or from a saved DatasetDict."""


def iter_txt_documents(files: list[str], sample_by: str) -> Iterator[dict[str, str]]:
    """Documents of plain-text files, streamed: per line, per block between blank lines, or per file.

    Unlike `datasets`' text builder, a line holding only spaces counts as blank (wikitext's are " ").
    """
    for file in files:
        with open(file, encoding="utf-8-sig", errors="replace") as f:
            if sample_by == "document":
                yield {"text": f.read()}
                continue
            block: list[str] = []
            for line in f:
                if sample_by == "line":
                    yield {"text": line.rstrip("\n")}
                elif line.strip():
                    block.append(line)
                elif block:
                    yield {"text": "".join(block).rstrip("\n")}
                    block = []
            if block:
                yield {"text": "".join(block).rstrip("\n")}
