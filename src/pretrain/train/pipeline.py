"""Pipeline parallel for causal decoders: torch.distributed.pipelining over hand-built stages.

Each process keeps the model's embedding and head (tied in our Llama configs, so both stages hold
the one tied matrix, as Megatron does; its gradient is summed over the stages after backward) and
only its own run of decoder layers; every stage recomputes the rotary embeddings and the causal
mask from the hidden states it receives. Parameter names stay those of the whole model, so sharded
checkpoints reshard between PP=2 and one process. transformers' own `DistributedConfig(pp_size)`
trains only the last stage (measured: stage 0 gets no gradients), hence stages built here.

The objective still owns the loss: the last stage hands each pipeline micro-batch's logits to
`objective.compute_loss` through a stand-in model, and the summed loss times the trainer's scale
is what the schedule differentiates (`scale_grads=False`: the trainer normalises by target count).
Batches may carry only input_ids and labels (no per-stage attention masks: not prefix LM or
data.document_mask).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
import torch.distributed as dist
from accelerate import Accelerator
from torch import nn

from pretrain.config import ConfigError
from pretrain.objectives.base import token_loss
from pretrain.objectives.head_loss import find_head
from pretrain.settings import ParallelConfig
from pretrain.train.parallel import Layout, ShardedPlan


class LlamaStage(nn.Module):
    """Layers [start, stop) of a Llama causal LM; the first stage embeds, the last normalises and projects."""

    def __init__(self, model: nn.Module, start: int, stop: int, first: bool, last: bool) -> None:
        super().__init__()
        inner = model.model
        inner.layers = nn.ModuleDict({str(i): inner.layers[i] for i in range(start, stop)})  # names kept
        if not last:
            inner.norm = None
        self.model, self.first, self.last = model, first, last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from transformers.masking_utils import create_causal_mask

        inner = self.model.model
        hidden = inner.embed_tokens(x) if self.first else x  # (b, t, h)
        position_ids = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        mask = create_causal_mask(
            config=inner.config,
            inputs_embeds=hidden,
            attention_mask=None,
            past_key_values=None,
            position_ids=position_ids,
        )
        rotary = inner.rotary_emb(hidden, position_ids=position_ids)
        for layer in inner.layers.values():
            hidden = layer(hidden, attention_mask=mask, position_embeddings=rotary, position_ids=position_ids)
        if self.last:
            return self.model.lm_head(inner.norm(hidden))  # (b, t, v)
        return hidden


class PipelineModel(nn.Module):
    """This process's stage; calling it runs a forward-only pass through all stages (evaluation),
    returning every process the logits so the evaluation harness runs unchanged."""

    def __init__(self, stage: LlamaStage, rank: int, world: int) -> None:
        super().__init__()
        self.stage, self.rank, self.world = stage, rank, world

    @torch.no_grad()
    def forward(
        self, input_ids: torch.Tensor, use_cache: bool | None = None, **extra: Any
    ) -> SimpleNamespace:
        reject_extra_inputs(extra)
        # A loss asked of the model's ChunkedLMHead (pretrain.objectives.head_loss) exists on the last
        # stage only: every stage computes plain logits, and each process scores the broadcast logits.
        head = find_head(self.stage.model)
        request = head.request if head is not None else None
        if head is not None:
            head.request = None
        try:
            logits = self._logits(input_ids)
        finally:
            if head is not None:
                head.request = request
        if request is not None:
            request.result = token_loss(
                logits, request.labels, request.token_bytes, request.with_stats, request.z_loss_weight
            )
            logits = logits[..., :0]  # what the head returns when it computed the loss itself
        return SimpleNamespace(logits=logits)

    def _logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        config = self.stage.model.config
        b, t = input_ids.shape
        hidden = input_ids
        if self.rank > 0:
            hidden = torch.empty(b, t, config.hidden_size, dtype=self.stage.model.dtype)
            dist.recv(hidden, src=self.rank - 1)
        out = self.stage(hidden)
        if self.rank < self.world - 1:
            dist.send(out.contiguous(), dst=self.rank + 1)
            out = torch.empty(b, t, config.vocab_size, dtype=self.stage.model.dtype)
        dist.broadcast(out, src=self.world - 1)
        return out  # (b, t, v) on every process


def reject_extra_inputs(extra: dict[str, Any]) -> None:
    if extra:
        raise ConfigError(
            f"pipeline parallel passes only input_ids between stages, but batches carry {sorted(extra)} "
            "(prefix LM, data.document_mask); train this objective with parallel.tp_size or dp_shard_size"
        )


class _Logits:
    """A stand-in model for `objective.compute_loss`: returns the last stage's logits."""

    training = True

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits

    def __call__(self, **inputs: Any) -> SimpleNamespace:
        return SimpleNamespace(logits=self.logits)


class PipelinePlan(ShardedPlan):
    """PP over all processes (dp = 1): one stage per process, GPipe or 1F1B."""

    def __init__(self, accelerator: Accelerator, layout: Layout, pcfg: ParallelConfig) -> None:
        super().__init__(accelerator, layout)
        if pcfg.pp_schedule == "interleaved":
            raise ConfigError(
                "parallel.pp_schedule=interleaved needs several stages per process, which are not built here; "
                "use gpipe or 1f1b"
            )
        self.schedule_name = pcfg.pp_schedule
        self.microbatches = pcfg.pp_microbatches or layout.pp
        self.rank, self.world = accelerator.process_index, layout.pp
        self.pp_group = dist.new_group(list(range(layout.pp)), backend=dist.get_backend())
        self.schedule = None

    def shard_model(self, model: nn.Module, output_dir: Any) -> nn.Module:
        if type(model).__name__ != "LlamaForCausalLM":
            raise ConfigError(
                f"parallel.pp_size: pipeline stages are built for LlamaForCausalLM, not {type(model).__name__}; "
                "use model.family=llama, or parallel.dp_shard_size"
            )
        layers = model.config.num_hidden_layers
        if layers < self.world:
            raise ConfigError(f"parallel.pp_size={self.world} needs at least as many layers, got {layers}")
        bounds = [layers * s // self.world for s in range(self.world + 1)]
        first, last = self.rank == 0, self.rank == self.world - 1
        stage = LlamaStage(model, bounds[self.rank], bounds[self.rank + 1], first, last)
        self.tied = model.lm_head.weight is model.model.embed_tokens.weight
        return PipelineModel(stage, self.rank, self.world)

    def _build_schedule(self, model: PipelineModel, micro_batch: int) -> None:
        from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

        if micro_batch % self.microbatches:
            raise ConfigError(
                f"train.micro_batch_size={micro_batch} is not divisible by parallel.pp_microbatches={self.microbatches}"
            )
        stage = PipelineStage(
            model.stage, self.rank, self.world, self.accelerator.device, group=self.pp_group
        )
        cls = ScheduleGPipe if self.schedule_name == "gpipe" else Schedule1F1B
        self.loss_sums: list[torch.Tensor] = []
        self.schedule = cls(stage, n_microbatches=self.microbatches, loss_fn=self._loss_fn, scale_grads=False)

    def forward_backward(self, objective: Any, model: nn.Module, batch: dict, scale: float) -> torch.Tensor:
        """One micro-step through the pipeline; every process returns the last stage's summed loss."""
        reject_extra_inputs({k: v for k, v in batch.items() if k not in ("input_ids", "labels")})
        if self.schedule is None:
            self._build_schedule(model, batch["input_ids"].shape[0])
        self.objective, self.scale, self.loss_sums = objective, scale, []
        if self.rank == 0:
            self.schedule.step(batch["input_ids"])
        elif self.rank == self.world - 1:
            self.schedule.step(target=batch["labels"])
        else:
            self.schedule.step()
        # The first step also calls the loss once while the stages infer shapes: keep the real micro-batches'.
        real = self.loss_sums[-self.microbatches :]
        totals = torch.stack(real).sum(0) if real else torch.zeros(2, dtype=torch.float64)
        dist.broadcast(totals, src=self.world - 1, group=self.pp_group)
        return totals  # (2,) [summed loss, summed regulariser], as DataParallelPlan.forward_backward

    def _loss_fn(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        out = self.objective.compute_loss(_Logits(logits), {"input_ids": labels, "labels": labels})
        self.loss_sums.append(out.logged())
        return out.training_loss() * self.scale

    def no_sync(self, model: nn.Module) -> Any:
        from contextlib import nullcontext

        return nullcontext()  # no data-parallel reduction to defer

    def clip_grad_norm(self, model: nn.Module, max_norm: float) -> float:
        """Sum the tied embedding's gradient over stages, then clip by the norm over all stages."""
        params = list(model.parameters())
        tied = model.stage.model.model.embed_tokens.weight if self.tied else None
        if tied is not None:
            if tied.grad is None:
                tied.grad = torch.zeros_like(tied)
            dist.all_reduce(tied.grad, group=self.pp_group)
        # The tied matrix is one parameter of the model: count it once (on stage 0).
        counted = [p.grad for p in params if p.grad is not None and (p is not tied or self.rank == 0)]
        local = torch.nn.utils.get_total_norm(counted, norm_type=2.0) if counted else torch.zeros(())
        squares = local.double() ** 2
        dist.all_reduce(squares, group=self.pp_group)
        total = float(squares.sqrt())
        coef = max_norm / (total + 1e-6)
        if coef < 1.0:
            torch._foreach_mul_([p.grad for p in params if p.grad is not None], coef)
        return total

    def unwrap(self, model: nn.Module) -> nn.Module:
        return model.stage.model

    def gather_state_dict(self, model: nn.Module) -> tuple[nn.Module, dict | None]:
        """Every stage's tensors, gathered to the main process (a collective)."""
        local = {k: v.detach().cpu() for k, v in model.stage.model.state_dict().items()}
        parts: list[dict | None] = [None] * self.world if self.accelerator.is_main_process else None
        dist.gather_object(local, parts, dst=0, group=self.pp_group)
        if not self.accelerator.is_main_process:
            return model.stage.model, None
        full: dict[str, torch.Tensor] = {}
        for part in parts:
            full.update(part)
        if self.tied:
            full.pop("lm_head.weight", None)  # tied to model.embed_tokens.weight
        return _whole_model(model.stage.model, full), full


def _whole_model(stage_model: nn.Module, full: dict[str, torch.Tensor]) -> nn.Module:
    """A whole model of the stage's class holding `full` (for a stock Hugging Face folder)."""
    whole = type(stage_model)(stage_model.config)
    missing, unexpected = whole.load_state_dict(full, strict=False)
    if set(missing) - {"lm_head.weight"} or unexpected:  # the tied head comes with the embedding
        raise RuntimeError(
            f"pipeline stages did not add up to the model: missing {missing}, unexpected {unexpected}"
        )
    return whole
