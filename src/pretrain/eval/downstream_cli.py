"""`pretrain eval --model DIR --tasks NAME[,NAME...] [--include-path DIR] [--limit N] [--num-fewshot K]`.

Runs lm-evaluation-harness tasks (pretrain.eval.downstream) on a saved causal or prefix-LM model and
merges the scores into the run's eval_results.json under `downstream` (task -> metric -> value and
stderr; other keys and earlier tasks are kept), from where the Hub model card's model-index reads them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pretrain.config import ConfigError

TASK_OPTIONS = ("--tasks", "--include-path", "--limit", "--num-fewshot")


def _count(own: dict[str, str], name: str) -> int | None:
    value = own.get(name)
    if value is None:
        return None
    if not value.isdigit():
        raise ConfigError(f"--{name} must be a non-negative integer, got {value!r}")
    return int(value)


def run_tasks(own: dict[str, str], model_dir: Path, objective: str) -> dict[str, Any]:
    """Scores of the model in `model_dir` on `--tasks`, written into eval_results.json (or --output)."""
    from pretrain.eval.compression import load_causal_lm
    from pretrain.eval.downstream import build_task_manager, check_tasks_load, run_downstream

    if objective not in ("causal", "prefix_lm"):
        raise ConfigError(
            f"--tasks needs a causal or prefix-LM model; {model_dir} is {objective} (use `pretrain probe` for encoders)"
        )
    tasks = [t.strip() for t in own.get("tasks", "").split(",") if t.strip()]
    if not tasks:
        raise ConfigError(
            "--tasks needs one or more lm-eval task names, e.g. --tasks python_docs_mc,arc_easy"
        )
    limit, num_fewshot = _count(own, "limit") or 0, _count(own, "num-fewshot")
    manager = build_task_manager(tasks, own.get("include-path") or None)
    check_tasks_load(manager, tasks)  # a missing dataset fails here, before the model is loaded
    model, tokenizer = load_causal_lm(model_dir)
    summary = run_downstream(
        model, tokenizer, tasks, manager, objective == "prefix_lm", limit=limit, num_fewshot=num_fewshot
    )
    output = Path(own.get("output") or model_dir / "eval_results.json")
    results = json.loads(output.read_text()) if output.is_file() else {"objective": objective}
    results["downstream"] = {**results.get("downstream", {}), **summary}
    partial = output.with_name(output.name + ".partial")
    partial.write_text(json.dumps(results, indent=2))
    os.replace(partial, output)  # never a half-written eval_results.json
    return {"objective": objective, "scoring": _scoring(objective), "downstream": summary}


def _scoring(objective: str) -> str:
    return "bidirectional prefix" if objective == "prefix_lm" else "causal"


def format_downstream(summary: dict[str, dict[str, dict[str, float | None]]]) -> list[str]:
    """One line per task and metric: `task  metric  value ± stderr`."""
    lines = []
    for task, metrics in summary.items():
        for metric, row in metrics.items():
            stderr = f" ± {row['stderr']:.4f}" if row["stderr"] is not None else ""
            lines.append(f"{task:<24} {metric:<12} {row['value']:.4f}{stderr}")
    return lines
