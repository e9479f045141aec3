"""Our multiple-choice JSONL format as an lm-eval dataset: `custom_dataset: !function questions.load`.

lm-eval imports this file by path (it is not imported by the package). It reads the questions with
pretrain.eval.multiple_choice.load_questions, so `--multiple-choice FILE` and `--tasks` parse one format
(ours, HellaSwag's ctx/endings/label or PIQA's goal/sol1/sol2/label). A relative `data_files` path is
read from this folder, so a task YAML can sit beside its data.
"""

from __future__ import annotations

from pathlib import Path

import datasets

from pretrain.eval.multiple_choice import load_questions

HERE = Path(__file__).resolve().parent


def load(data_files: str, **metadata: object) -> datasets.DatasetDict:
    """A DatasetDict with one `test` split of {context, choices, label} rows."""
    path = Path(data_files)
    questions = load_questions(path if path.is_absolute() else HERE / path)
    rows = {
        "context": [q.context for q in questions],
        "choices": [list(q.choices) for q in questions],
        "label": [q.label for q in questions],
    }
    return datasets.DatasetDict({"test": datasets.Dataset.from_dict(rows)})
