"""In-loop downstream evaluation: `train.downstream_tasks` through lm-evaluation-harness during training.

Called by the trainer every `train.downstream_eval_steps` optimizer steps and after the last one. Every
process runs the same evaluation of the unwrapped model on the same requests (pretrain.eval.downstream),
so DDP ranks need no collective at all and ZeRO-3's parameter gathers happen in the same order on every
rank: no rank waits for another. `train.downstream_limit` documents per task bound the cost.
Results go to downstream_history.jsonl, the trackers (`downstream/TASK/METRIC`) and the console.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from accelerate import Accelerator
from torch import nn

from pretrain.config import ConfigError
from pretrain.eval.downstream import build_task_manager, check_tasks_load, run_downstream, scalar_downstream
from pretrain.objectives.base import Objective
from pretrain.train.monitoring import MetricsLog

LANGUAGE_MODELS = ("causal", "prefix_lm")  # objectives whose checkpoints lm-eval can score


class DownstreamEval:
    """Evaluates the downstream tasks of `cfg.train` at their steps; `last` holds the latest results."""

    def __init__(self, cfg: Any, objective: Objective, accelerator: Accelerator, max_steps: int) -> None:
        tcfg = cfg.train
        if objective.name not in LANGUAGE_MODELS:
            raise ConfigError(
                f"train.downstream_tasks scores a language model; objective {objective.name} is not causal or "
                "prefix_lm (use `pretrain probe` for encoders)"
            )
        if cfg.parallel.model_parallel():
            raise ConfigError(
                "train.downstream_tasks runs under data parallel and DeepSpeed ZeRO only, not a `parallel` "
                "layout; evaluate the saved model with `pretrain eval --model DIR --tasks ...`"
            )
        self.tasks, self.tcfg = list(tcfg.downstream_tasks), tcfg
        self.objective, self.accelerator, self.max_steps = objective, accelerator, max_steps
        # Every process indexes the same task folders (no file is written).
        self.manager = build_task_manager(self.tasks, tcfg.downstream_include_path or None)
        check_tasks_load(self.manager, self.tasks)  # fail before training, not at the first evaluation
        self.last: dict[str, Any] = {}
        self.log: MetricsLog | None = None  # opened by open_log when training starts

    def due(self, step: int) -> bool:
        every = self.tcfg.downstream_eval_steps
        return step == self.max_steps or bool(every and step % every == 0)

    def open_log(self, output_dir: Path, resume_step: int | None) -> None:
        """Start downstream_history.jsonl (a resumed run keeps the lines up to its checkpoint)."""
        self.log = MetricsLog(
            output_dir / "downstream_history.jsonl", self.accelerator.is_main_process, resume_step
        )

    def run(self, model: nn.Module, step: int, tokens_seen: int) -> None:
        """Evaluate the (unwrapped) model on every process; the main process writes the results."""
        acc = self.accelerator
        self.last = run_downstream(
            acc.unwrap_model(model),
            self.objective.tokenizer,
            self.tasks,
            self.manager,
            prefix_lm=self.objective.name == "prefix_lm",
            limit=self.tcfg.downstream_limit,
            batch_size=self.tcfg.eval_batch_size or self.tcfg.micro_batch_size,
        )
        if self.log is not None:
            self.log.write({"step": step, "tokens_seen": tokens_seen, "downstream": self.last})
        flat = scalar_downstream(self.last)
        if acc.trackers:
            acc.log(flat, step=step)
        acc.print(f"step {step}: " + " ".join(f"{k}={v:.4f}" for k, v in flat.items()))
