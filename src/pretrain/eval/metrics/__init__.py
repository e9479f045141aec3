"""`evaluate` metric modules shipped in the repo (accuracy, f1, spearmanr), loaded by path.

`evaluate.load("accuracy")` fetches the module from the Hub and fails offline; `load_metric` loads the
copy in this folder instead (evaluate copies it into its modules cache and imports it from there).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

METRICS_DIR = Path(__file__).resolve().parent


def load_metric(name: str) -> Any:
    """The `evaluate` metric `name` (a folder here holding `name.py`)."""
    import evaluate

    return evaluate.load(str(METRICS_DIR / name))
