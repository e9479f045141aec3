"""The one training loop every objective runs through (Accelerate).

One optimizer step = `gradient_accumulation_steps` micro-steps on every process. The loss of a
step is the sum of the objective's per-target losses over all its micro-steps and processes,
divided by the number of targets in all of them (counted before the forward pass and all-reduced),
so 4 micro-batches x 2 accumulation steps equals 8 x 1 exactly, for every objective.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn
from tqdm.auto import tqdm

from pretrain.config import ConfigError
from pretrain.data.streaming import train_batches
from pretrain.eval.frequency import TokenBuckets, scalar_metrics
from pretrain.eval.harness import evaluate
from pretrain.objectives.base import Batch, Objective
from pretrain.train.checkpoint import (
    TrainerState,
    load_checkpoint,
    resolve_checkpoint,
    rotate_checkpoints,
    save_checkpoint,
)
from pretrain.train.distributed import configure_deepspeed, uses_deepspeed
from pretrain.train.downstream import DownstreamEval
from pretrain.train.host import keep_freed_buffers
from pretrain.train.monitoring import MetricsLog, model_flops_utilization, peak_memory_gb, resolve_peak_flops
from pretrain.train.optim import build_optimizer, build_scheduler
from pretrain.train.plan import build_plan
from pretrain.train.resume_config import compare_resume_config
from pretrain.train.sharded_checkpoint import ShardedCheckpointer, is_sharded_checkpoint, protected_bases
from pretrain.train.warmup import build_warmups


class TrainingStopped(RuntimeError):
    """Training stopped by a guard (e.g. repeated non-finite losses); a checkpoint was saved."""


@dataclass
class StepResult:
    loss: float
    z_loss: float  # the regulariser's summed term per target (0 without z-loss)
    grad_norm: float
    learning_rate: float
    skipped: str | None  # None, "nonfinite", "spike" or "overflow" (fp16 loss scale)


class Trainer:
    """Trains `model` on `train_data` with `objective`; owns optimizer, schedule, guards, checkpoints."""

    def __init__(
        self,
        cfg: Any,
        objective: Objective,
        model: nn.Module,
        train_data: Any,
        eval_data: Any,
        accelerator: Accelerator,
        config_yaml: str,
        flops_per_token: float,
        after_save: Callable[[Trainer, Path], None] | None = None,
        frequency: TokenBuckets | None = None,
    ) -> None:
        self.cfg, self.tcfg = cfg, cfg.train
        self.objective = objective
        self.accelerator = accelerator
        self.output_dir = Path(self.tcfg.output_dir)
        self.eval_data = eval_data
        self.config_yaml = config_yaml
        self.flops_per_token = flops_per_token
        self.after_save = after_save  # e.g. the Hub push per train.hub_strategy; called on every process
        # Built once from the `parallel` section: DDP/DeepSpeed through Accelerate, or TP/FSDP2/PP.
        self.plan = build_plan(cfg.parallel, accelerator, model)
        self.frequency = frequency  # loss by token frequency in every evaluation (language models)
        self.tokens_per_step = (
            self.tcfg.micro_batch_size
            * self.tcfg.gradient_accumulation_steps
            * self.plan.dp_size
            * objective.block_len()
        )
        # Packed objectives read exactly tokens_per_step; others (contrastive) count theirs each step.
        self.max_steps = self.tcfg.max_steps
        if self.tcfg.max_tokens:
            if not objective.fixed_length_rows:
                raise ConfigError(
                    f"train.max_tokens needs packed rows of a fixed length; objective {objective.name} has rows of "
                    "varying length: set train.max_steps instead"
                )
            self.max_steps = math.ceil(self.tcfg.max_tokens / self.tokens_per_step)
        model = self.plan.shard_model(model, self.output_dir)
        if self.tcfg.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        if self.tcfg.torch_compile:
            model = torch.compile(model)
        self.deepspeed = uses_deepspeed(accelerator)
        if self.deepspeed:
            configure_deepspeed(accelerator, self.tcfg)
        self.warmups = build_warmups(self.tcfg, objective.block_len(), objective, self.deepspeed)
        keep_freed_buffers()  # see pretrain.train.host: no page faults on each step's large buffers
        # Fused AdamW: one kernel for all parameters (on CPU too: the default there is a Python loop per
        # tensor); not for optimizers DeepSpeed replaces, nor DTensors off CUDA.
        cuda = accelerator.device.type == "cuda"
        optimizer = build_optimizer(
            model, self.tcfg, fused=not self.deepspeed and (cuda or not self.plan.sharded)
        )
        scheduler = build_scheduler(optimizer, self.tcfg, self.max_steps)
        self.model, self.optimizer, self.scheduler = self.plan.prepare(model, optimizer, scheduler)
        self.batches = train_batches(
            train_data,
            objective.collate,
            self.tcfg.micro_batch_size,
            self.tcfg.seed,
            self.plan.dp_rank,
            self.plan.dp_size,
        )
        self.batches.check_budget(self.max_steps * self.tcfg.gradient_accumulation_steps)
        self.checkpointer = ShardedCheckpointer(self.plan, self.output_dir, self.tcfg, config_yaml)
        if self.tcfg.optimizer == "muon" and (
            self.plan.sharded or self.deepspeed or self.checkpointer.enabled
        ):
            raise ConfigError(
                "train.optimizer=muon runs under plain data parallel with checkpoint_format=accelerate; drop the "
                "parallel.* sizes, DeepSpeed and async/incremental saves, or use train.optimizer=adamw"
            )
        self.state = TrainerState()
        self.peak_flops = resolve_peak_flops(self.tcfg.peak_flops, accelerator.device)
        self.downstream = (  # lm-eval tasks during training (train.downstream_tasks)
            DownstreamEval(cfg, objective, accelerator, self.max_steps)
            if self.tcfg.downstream_tasks
            else None
        )

    # --- one optimizer step ------------------------------------------------------------------
    def _global_sum(self, value: float) -> float:
        return self.plan.global_sum(value)  # over the data-parallel group: TP/PP ranks share a batch

    def train_step(self, micro_batches: list[Batch]) -> StepResult:
        """Forward/backward every micro-batch, then clip and update unless a guard skips the step."""
        acc = self.accelerator
        global_targets = self._global_sum(sum(self.objective.count_targets(b) for b in micro_batches))
        # DDP/FSDP2 average gradients over data-parallel ranks; multiplying by their number turns that
        # into a sum. DeepSpeed also divides each micro-step's loss by its accumulation steps: undo that too.
        scale = self.plan.dp_size / max(global_targets, 1.0)
        if self.deepspeed:
            scale *= len(micro_batches)
        local = torch.zeros(2, dtype=torch.float64, device=acc.device)  # [summed loss, summed regulariser]
        for i, batch in enumerate(micro_batches):
            sync = i == len(micro_batches) - 1
            if self.deepspeed:  # DeepSpeed steps inside backward at the boundary Accelerate reports
                acc.gradient_state._set_sync_gradients(sync)
            with nullcontext() if sync else self.plan.no_sync(self.model), acc.autocast():
                local += self.plan.forward_backward(self.objective, self.model, batch, scale)
        # One all-reduce and one host transfer for both sums.
        loss, z_loss = (self.plan.global_sum(local) / max(global_targets, 1.0)).tolist()
        max_norm = self.tcfg.max_grad_norm if self.tcfg.max_grad_norm > 0 else float("inf")
        grad_norm = self.plan.clip_grad_norm(self.model, max_norm)  # one norm per device mesh
        # Under DeepSpeed the engine has already stepped inside backward: a guard can count and
        # stop, but not undo (DeepSpeed's fp16 loss scaler does skip overflowing steps itself).
        scaler = acc.scaler  # fp16 only; clip_grad_norm_ has unscaled the gradients
        # A finite loss with non-finite gradients under fp16 is a loss-scale overflow, routine in early
        # steps: the scaler skips the step and halves its scale; the non-finite guard does not count it.
        if scaler is not None and math.isfinite(loss) and not math.isfinite(grad_norm):
            skipped = "overflow"
            self.state.skipped_overflow += 1
        else:
            skipped = self._guard(loss, grad_norm)
        learning_rate = self.scheduler.get_last_lr()[0]  # the rate this step uses
        if skipped in (None, "overflow"):
            self.optimizer.step()  # Accelerate's step runs scaler.step() and scaler.update()
        elif scaler is not None:
            scaler.update()  # after unscale_, update() must run before the next step's unscale_
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult(loss, z_loss, grad_norm, learning_rate, skipped)

    def _guard(self, loss: float, grad_norm: float) -> str | None:
        """Decide whether to skip this update; every process decides the same (global values)."""
        state = self.state
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            state.skipped_nonfinite += 1
            state.consecutive_nonfinite += 1
            return "nonfinite"
        state.consecutive_nonfinite = 0
        window = state.recent_losses
        k = self.tcfg.spike_threshold
        if k > 0 and len(window) >= 10:
            mean, std = statistics.fmean(window), statistics.pstdev(window)
            if loss > mean + k * std:
                state.skipped_spikes += 1
                return "spike"
        window.append(loss)
        del window[: max(0, len(window) - self.tcfg.spike_window)]
        return None

    # --- the loop ----------------------------------------------------------------------------
    def maybe_resume(self) -> None:
        spec = self.tcfg.resume_from_checkpoint
        if not spec:
            return
        path = resolve_checkpoint(self.output_dir, spec)
        for change in compare_resume_config(path, self.cfg):
            self.accelerator.print(f"resume: applying {change}")
        if is_sharded_checkpoint(path):
            self.state = self.checkpointer.load(path, self.model, self.optimizer, self.scheduler)
        else:
            self.state = load_checkpoint(self.accelerator, path)
        self.batches.position = self.state.data_position
        self.batches.load_state_dict(self.state.data_state)
        self.accelerator.print(f"resumed from {path} at step {self.state.step}")

    def train(self) -> TrainerState:
        acc, tcfg, state = self.accelerator, self.tcfg, self.state
        metrics = MetricsLog(
            self.output_dir / "metrics.jsonl",
            acc.is_main_process,
            state.step if tcfg.resume_from_checkpoint else None,
        )
        evals = MetricsLog(
            self.output_dir / "eval_history.jsonl",
            acc.is_main_process,
            state.step if tcfg.resume_from_checkpoint else None,
        )
        if self.downstream:
            self.downstream.open_log(self.output_dir, state.step if tcfg.resume_from_checkpoint else None)
        if self.peak_flops is None:
            acc.print("MFU: N/A (no peak FLOP/s known for this device; set --train.peak_flops to report it)")
        bar = tqdm(
            total=self.max_steps,
            initial=state.step,
            disable=not acc.is_main_process,
            desc="train",
            dynamic_ncols=True,
        )
        interval_losses, interval_start, interval_tokens = [], time.perf_counter(), 0
        self.model.train()
        while state.step < self.max_steps:
            seen, warm = state.tokens_seen, self.warmups  # the warmups are functions of the tokens seen
            micro = [
                self._to_device(warm.shorten(next(self.batches), seen))
                for _ in range(warm.accumulation_at(seen))
            ]
            result = self.train_step(micro)
            self.checkpointer.poll()  # completes an asynchronous save once every process has written it
            state.step += 1
            state.data_position = self.batches.position
            step_tokens = self._step_tokens(micro)
            state.tokens_seen += step_tokens
            interval_tokens += step_tokens
            if result.skipped is None:
                interval_losses.append(result.loss)
            bar.update(1)
            if result.skipped:
                if acc.is_main_process:
                    tqdm.write(f"step {state.step}: skipped update ({result.skipped} loss {result.loss:.4g})")
            if state.consecutive_nonfinite >= tcfg.max_nonfinite_steps:
                path = self.save(blocking=True)
                raise TrainingStopped(
                    f"{state.consecutive_nonfinite} consecutive steps had a non-finite loss (last at step {state.step}); "
                    f"saved {path}; lower train.learning_rate or use bf16 instead of fp16, then resume"
                )
            if state.step % tcfg.logging_steps == 0 or state.step == self.max_steps:
                elapsed = time.perf_counter() - interval_start
                record = self._log_record(result, interval_losses, interval_tokens / max(elapsed, 1e-9))
                metrics.write(record)
                if acc.trackers:
                    acc.log({k: v for k, v in record.items() if isinstance(v, int | float)}, step=state.step)
                bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['learning_rate']:.2e}")
                interval_losses, interval_start, interval_tokens = [], time.perf_counter(), 0
            if tcfg.eval_steps and state.step % tcfg.eval_steps == 0 and state.step != self.max_steps:
                self._periodic_eval(evals)
            if self.downstream and self.downstream.due(state.step):
                self.downstream.run(self.model, state.step, state.tokens_seen)
            if tcfg.save_steps and state.step % tcfg.save_steps == 0:
                self.save()
        self.checkpointer.wait()
        bar.close()
        return state

    def _step_tokens(self, micro_batches: list[Batch]) -> int:
        """Tokens read by all processes in this optimizer step."""
        if self.objective.fixed_length_rows:  # fewer micro-steps during a batch-size warmup
            return self.tokens_per_step * len(micro_batches) // self.tcfg.gradient_accumulation_steps
        local = sum(self.objective.count_tokens(b) for b in micro_batches)
        return int(self.accelerator.reduce(torch.tensor(local, device=self.accelerator.device), "sum").item())

    def _to_device(self, batch: Batch) -> Batch:
        return {k: v.to(self.accelerator.device, non_blocking=True) for k, v in batch.items()}

    def _log_record(
        self, result: StepResult, losses: list[float], tokens_per_second: float
    ) -> dict[str, Any]:
        state = self.state
        mfu = model_flops_utilization(
            tokens_per_second, self.flops_per_token, self.peak_flops, self.accelerator.num_processes
        )
        return {
            "step": state.step,
            "loss": statistics.fmean(losses) if losses else result.loss,
            "learning_rate": result.learning_rate,
            "z_loss": result.z_loss,
            "grad_norm": result.grad_norm,
            "tokens_per_second": tokens_per_second,
            "mfu": mfu,
            "peak_memory_gb": peak_memory_gb(self.accelerator.device),
            "tokens_seen": state.tokens_seen,
            "epoch": self.batches.epoch,
            "skipped_nonfinite": state.skipped_nonfinite,
            "skipped_spikes": state.skipped_spikes,
            "skipped_overflow": state.skipped_overflow,
            "loss_scale": self.accelerator.scaler.get_scale() if self.accelerator.scaler else None,
            **self.batches.source_metrics(),  # a mixture's tokens_seen_by_source, epochs_by_source
        }

    def _periodic_eval(self, evals: MetricsLog) -> None:
        batch_size = self.tcfg.eval_batch_size or self.tcfg.micro_batch_size
        results = evaluate(
            self.objective,
            self.model,
            self.eval_data,
            self.plan.data_view,
            batch_size,
            self.tcfg.eval_max_batches,
            self.frequency,
        )
        evals.write({"step": self.state.step, "tokens_seen": self.state.tokens_seen, **results})
        results = scalar_metrics(results)
        if self.accelerator.trackers:
            self.accelerator.log({f"eval/{k}": v for k, v in results.items()}, step=self.state.step)
        if self.state.best_eval_loss is None or results["eval_loss"] < self.state.best_eval_loss:
            self.state.best_eval_loss, self.state.best_eval_step = results["eval_loss"], self.state.step
        if self.accelerator.is_main_process:  # tqdm.write: on its own line, not glued to the progress bar
            tqdm.write(
                f"step {self.state.step}: "
                + " ".join(
                    f"{k}={v:.4f}" for k, v in results.items() if not k.startswith("loss_by_frequency")
                )
            )

    def save(self, blocking: bool = False) -> Path:
        """Save a resumable checkpoint and rotate old ones (keeping the one of the best evaluation).

        Sharded saves may complete asynchronously: rotation and `after_save` then run when it is complete."""
        self.state.data_state = self.batches.state_dict()  # a stream's position (collective); else None
        if self.state.best_eval_step == self.state.step:
            self.state.best_checkpoint = f"checkpoint-{self.state.step}"
        if self.checkpointer.enabled:
            return self.checkpointer.save(
                self.model, self.optimizer, self.scheduler, self.state, self._saved, blocking
            )
        path = save_checkpoint(self.accelerator, self.output_dir, self.state, self.config_yaml)
        self._saved(path)
        return path

    def _saved(self, path: Path) -> None:
        if self.accelerator.is_main_process:
            rotate_checkpoints(
                self.output_dir,
                self.tcfg.save_total_limit,
                self.state.best_checkpoint,
                protected_bases(self.output_dir),
            )
        if self.after_save is not None:
            self.after_save(self, path)
