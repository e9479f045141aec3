"""Downstream tasks through EleutherAI's lm-evaluation-harness (`lm-eval`) on a model already in memory.

The harness owns the tasks (prompts, few-shot sampling, metrics, standard errors); this module only
wraps our model and tokenizer in its `HFLM` (nothing is downloaded again), points its TaskManager at
the tasks shipped in `lm_eval_tasks/` (our multiple-choice JSONL format as an lm-eval task) plus any
`--include-path`, and turns its results into `{task: {metric: {"value": v, "stderr": s}}}`.

Causal checkpoints are scored exactly as `lm_eval --model hf` scores them. Prefix-LM checkpoints are
scored with the context as a bidirectional prefix (`PrefixLMHFLM`), the attention they were trained
with; generation tasks still generate causally.

The same function runs after training (`pretrain eval --tasks`) and inside the training loop
(pretrain.train.downstream): every process evaluates the same requests in the same batches, so
ZeRO-3's parameter gathers line up on all ranks and every rank ends with the same numbers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from pretrain.data.text import DataError
from pretrain.eval.multiple_choice import score_rows

TASKS_DIR = Path(__file__).with_name("lm_eval_tasks")
BOOTSTRAP_ITERS = 1000  # for metrics without a closed-form stderr (acc/acc_norm have one)


def _quiet_lm_eval() -> None:
    """lm-eval logs every request batch at INFO/WARNING; keep its errors only."""
    for name in ("lm_eval", "lm-eval"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _hflm_class() -> type:
    from lm_eval.models.huggingface import HFLM

    class PrefixLMHFLM(HFLM):
        """HFLM whose loglikelihoods read the context as a bidirectional prefix (prefix-LM training's
        attention: context tokens see the whole context, continuation tokens see causally)."""

        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
            rows = []
            for _, context, continuation in requests:
                context = context[-max(self.max_length - len(continuation), 1) :]  # oldest tokens go
                rows.append((context + continuation, len(context), len(continuation)))
            size = override_bs or int(self.batch_size_per_gpu)
            answers: list[tuple[float, bool]] = []
            for start in range(0, len(rows), size):
                batch = rows[start : start + size]
                answers.extend(score_rows(self.model, batch, self.tokenizer.pad_token_id, prefix_lm=True))
            for (request, _, _), answer in zip(requests, answers, strict=True):
                if request is not None:
                    self.cache_hook.add_partial("loglikelihood", request, answer)
            return answers

    return PrefixLMHFLM


def build_lm(model: nn.Module, tokenizer: PreTrainedTokenizerBase, prefix_lm: bool, batch_size: int = 16):
    """lm-eval's `HFLM` around a loaded model (the `PrefixLMHFLM` subclass for prefix-LM checkpoints)."""
    from lm_eval.models.huggingface import HFLM

    _quiet_lm_eval()
    cls = _hflm_class() if prefix_lm else HFLM
    return cls(pretrained=model, tokenizer=tokenizer, backend="causal", batch_size=batch_size)


def build_task_manager(tasks: Sequence[str], include_path: str | Path | None = None):
    """lm-eval's TaskManager over ours (lm_eval_tasks/) and `include_path`, plus lm-eval's own tasks
    when a name is not among them (indexing lm-eval's thousands of YAML files takes seconds)."""
    from lm_eval.tasks import TaskManager

    _quiet_lm_eval()
    paths = [str(TASKS_DIR)]
    if include_path:
        if not Path(include_path).is_dir():
            raise DataError(
                f"--include-path {include_path} is not a directory; give a folder of task YAML files"
            )
        paths.append(str(include_path))
    local = TaskManager(include_path=paths, include_defaults=False)
    if all(task in local.all_tasks for task in tasks):
        return local
    return TaskManager(include_path=paths)


def check_task_names(manager: Any, tasks: Sequence[str]) -> None:
    """Every name must be an lm-eval task, group or tag known to `manager`."""
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        ours = sorted(p.stem for p in TASKS_DIR.glob("*.yaml"))
        raise DataError(
            f"unknown lm-eval task(s) {', '.join(unknown)}; give names from `lm_eval ls tasks`, ours "
            f"({', '.join(ours)}), or a task YAML in a folder passed with --include-path"
        )


def check_tasks_load(manager: Any, tasks: Sequence[str]) -> None:
    """Load every task once (its dataset included) before any model work, so a missing dataset fails
    at once with one line naming it, not after the model is loaded or hours into training."""
    check_task_names(manager, tasks)
    for task in tasks:
        try:
            manager.load([task])
        except Exception as err:  # noqa: BLE001 - datasets raises many types for a missing dataset
            raise missing_dataset_error(manager, task, err) from err


def missing_dataset_error(manager: Any, task: str, err: Exception) -> DataError:
    """The one-line error for a task whose dataset cannot be loaded (offline and not in the cache)."""
    entry = manager.task_index.get(task)
    cfg = (entry.cfg if entry else None) or {}
    dataset = "/".join(str(cfg[k]) for k in ("dataset_path", "dataset_name") if cfg.get(k))
    return DataError(
        f"task {task}: dataset {dataset or '(see its YAML)'} could not be loaded ({type(err).__name__}); "
        "it is not in the Hugging Face datasets cache and the Hub is unreachable or offline "
        "(HF_DATASETS_OFFLINE=1): run once with network to cache it, or copy the task YAML with "
        "dataset_path: json and local data_files into a folder and pass --include-path DIR"
    )


def summarize(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, dict[str, float | None]]]:
    """lm-eval's `{"acc,none": v, "acc_stderr,none": s}` per task -> `{"acc": {"value": v, "stderr": s}}`."""
    summary: dict[str, dict[str, dict[str, float | None]]] = {}
    for task, metrics in results.items():
        rows = {}
        for key, value in metrics.items():
            name, comma, filter_name = key.partition(",")
            if (
                not comma
                or "_stderr" in name
                or not isinstance(value, int | float)
                or isinstance(value, bool)
            ):
                continue
            label = name if filter_name in ("", "none") else f"{name}/{filter_name}"
            stderr = metrics.get(f"{name}_stderr,{filter_name}") if filter_name else None
            rows[label] = {
                "value": float(value),
                "stderr": float(stderr) if isinstance(stderr, int | float) else None,
            }
        summary[task] = rows
    return summary


@contextmanager
def _alone() -> Iterator[None]:
    """lm-eval returns results only where LOCAL_RANK is 0 (torchrun TP launches); here each process
    evaluates alone (HFLM around a model object has rank 0 of 1), so each must get its results."""
    saved = os.environ.get("LOCAL_RANK")
    os.environ["LOCAL_RANK"] = "0"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["LOCAL_RANK"]
        else:
            os.environ["LOCAL_RANK"] = saved


def run_downstream(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    tasks: Sequence[str],
    manager: Any,
    prefix_lm: bool = False,
    limit: int = 0,
    num_fewshot: int | None = None,
    batch_size: int = 16,
) -> dict[str, dict[str, dict[str, float | None]]]:
    """Scores of `model` on lm-eval `tasks` (at most `limit` documents each, 0 = all)."""
    from lm_eval import simple_evaluate

    check_task_names(manager, tasks)
    was_training = model.training
    lm = build_lm(model, tokenizer, prefix_lm, batch_size)
    try:
        with _alone():
            # No global seeding: inside training it would reset the training RNG; few-shot sampling keeps its seed.
            out = simple_evaluate(
                model=lm,
                tasks=list(tasks),
                num_fewshot=num_fewshot,
                limit=limit or None,
                task_manager=manager,
                log_samples=False,
                bootstrap_iters=BOOTSTRAP_ITERS,
                random_seed=None,
                numpy_random_seed=None,
                torch_random_seed=None,
            )
    except (ConnectionError, FileNotFoundError, OSError, ValueError) as err:  # not caught by the preflight
        raise DataError(f"lm-eval could not run {', '.join(tasks)}: {type(err).__name__}: {err}") from err
    finally:
        model.train(was_training)
    return summarize(out["results"])


def scalar_downstream(summary: dict[str, dict[str, dict[str, float | None]]]) -> dict[str, float]:
    """Flat `downstream/TASK/METRIC` values for trackers and metrics logs."""
    return {
        f"downstream/{task}/{metric}": row["value"]
        for task, metrics in summary.items()
        for metric, row in metrics.items()
        if row["value"] is not None
    }
