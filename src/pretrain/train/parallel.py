"""The parallel plan of a run: data parallel (Accelerate: DDP/DeepSpeed), tensor parallel, FSDP2, pipeline.

`build_plan` reads the `parallel` section once, checks it against the world size, the launcher and
the model, and returns one plan object; the trainer calls the same handful of methods on any plan
(shard the model, prepare, backward, no_sync, clip, sum over data-parallel ranks, gather for the
final save), so the loop never branches on a layout or an objective.

The engines do the work: tensor parallel is transformers' `from_pretrained(distributed_config=
DistributedConfig(tp_size))` (the model family's `tp_plan`; with `dp_shard_size` too, its 2-D
FSDP x TP mesh); FSDP2 alone is torch's `fully_shard` per decoder layer; pipeline parallel is
`torch.distributed.pipelining` over hand-built stages (pretrain.train.pipeline). Data parallel fills
the rest of the world size. A requested layout that would not take effect stops the run instead.
"""

from __future__ import annotations

import math
import shutil
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from accelerate import Accelerator
from torch import nn

from pretrain.config import ConfigError
from pretrain.settings import ParallelConfig

WORKS = (
    "what works: decoder-only objectives (causal, prefix_lm) on llama, olmo2, qwen3 (parallel.tp_size, "
    "parallel.dp_shard_size) or gpt2 (parallel.dp_shard_size), causal on llama also parallel.pp_size; "
    "every objective trains data parallel (DDP, DeepSpeed ZeRO)"
)


@dataclass(frozen=True)
class Layout:
    """Process counts per mechanism; world = dp * tp * pp, and dp_shard divides dp."""

    world: int
    tp: int
    pp: int
    dp_shard: int

    @property
    def dp(self) -> int:
        return self.world // (self.tp * self.pp)

    def describe(self) -> str:
        return f"dp={self.dp} (dp_shard={self.dp_shard}) tp={self.tp} pp={self.pp}"


def resolve_layout(pcfg: ParallelConfig, world: int, device_type: str) -> Layout:
    """The layout `pcfg` asks for on `world` processes, or a ConfigError naming what does not fit."""
    if pcfg.cp_size > 1:
        where = "it has no CPU kernels (GPU only), and " if device_type == "cpu" else ""
        raise ConfigError(
            f"parallel.cp_size={pcfg.cp_size}: context parallel is not wired into this trainer ({where}"
            "causal SDPA needs torch's context_parallel on CUDA); set parallel.cp_size=1"
        )
    model_parallel = pcfg.tp_size * pcfg.pp_size
    if world % model_parallel:
        raise ConfigError(
            f"parallel.tp_size x parallel.pp_size = {model_parallel} does not divide the {world} processes of "
            "this launch; launch a multiple of it (--num_processes)"
        )
    layout = Layout(world=world, tp=pcfg.tp_size, pp=pcfg.pp_size, dp_shard=pcfg.dp_shard_size)
    if layout.dp % layout.dp_shard:
        raise ConfigError(
            f"parallel.dp_shard_size={layout.dp_shard} does not divide the data-parallel size {layout.dp} "
            f"({world} processes / tp {layout.tp} / pp {layout.pp})"
        )
    if (layout.tp > 1 or layout.pp > 1 or layout.dp_shard > 1) and layout.dp != layout.dp_shard:
        raise ConfigError(
            f"{layout.describe()} on {world} processes leaves {layout.dp // layout.dp_shard} plain data-parallel "
            f"replicas beside model parallelism, which is not built; set parallel.dp_shard_size={layout.dp}"
        )
    if layout.pp > 1 and (layout.tp > 1 or layout.dp > 1):
        raise ConfigError(
            f"parallel.pp_size={layout.pp} combines only with itself here (got {layout.describe()}); "
            f"launch exactly {layout.pp} processes with parallel.tp_size=1 parallel.dp_shard_size=1"
        )
    return layout


class DataParallelPlan:
    """Plain data parallel through Accelerate (one process, DDP or DeepSpeed): today's behaviour."""

    name = "data_parallel"
    sharded = False  # model and optimizer are whole on every process

    def __init__(self, accelerator: Accelerator) -> None:
        self.accelerator = accelerator
        self.dp_size = accelerator.num_processes
        self.dp_rank = accelerator.process_index

    def shard_model(self, model: nn.Module, output_dir: Path) -> nn.Module:
        return model

    def prepare(self, model: nn.Module, optimizer: Any, scheduler: Any) -> tuple:
        return self.accelerator.prepare(model, optimizer, scheduler)

    def forward_backward(self, objective: Any, model: nn.Module, batch: dict, scale: float) -> torch.Tensor:
        """One micro-step: (2,) float64 [summed loss, summed regulariser] of `batch` (detached); the
        gradient of their sum times `scale` is added."""
        out = objective.compute_loss(model, batch)
        self.backward(out.training_loss() * scale)
        return out.logged()

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)

    def no_sync(self, model: nn.Module) -> AbstractContextManager:
        return self.accelerator.no_sync(model)

    def clip_grad_norm(self, model: nn.Module, max_norm: float) -> float:
        norm = self.accelerator.clip_grad_norm_(model.parameters(), max_norm)
        return float(norm) if norm is not None else float("nan")  # DeepSpeed: its own clipped step's norm

    def global_sum(self, value: float | torch.Tensor) -> float | torch.Tensor:
        """Sum of `value` (a number, or a tensor summed elementwise) over the data-parallel processes."""
        if self.dp_size == 1:
            return value
        if isinstance(value, torch.Tensor):
            return self.accelerator.reduce(value.to(self.accelerator.device), reduction="sum")
        t = torch.tensor([value], dtype=torch.float64, device=self.accelerator.device)
        return float(self.accelerator.reduce(t, reduction="sum"))

    def unwrap(self, model: nn.Module) -> nn.Module:
        return self.accelerator.unwrap_model(model)

    @property
    def data_view(self) -> Any:
        """What the evaluation harness shards batches and sums statistics over."""
        return self.accelerator

    def gather_state_dict(self, model: nn.Module) -> tuple[nn.Module, dict | None]:
        """(module to save, its full state dict) for the final Hugging Face folder; a collective."""
        return self.accelerator.unwrap_model(model), self.accelerator.get_state_dict(model)


class DataParallelView:
    """The Accelerator as the evaluation harness should see it: ranks and sums of the data-parallel group."""

    def __init__(self, accelerator: Accelerator, plan: ShardedPlan) -> None:
        self._accelerator, self._plan = accelerator, plan
        self.process_index, self.num_processes = plan.dp_rank, plan.dp_size

    def reduce(self, tensor: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        assert reduction == "sum", reduction
        out = tensor.clone()
        dist.all_reduce(out, group=self._plan.dp_group)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._accelerator, name)


class ShardedPlan(DataParallelPlan):
    """TP and/or FSDP2: parameters are DTensors, the model is never wrapped in DDP by Accelerate."""

    sharded = True

    def __init__(self, accelerator: Accelerator, layout: Layout) -> None:
        super().__init__(accelerator)
        self.layout = layout
        self.name = "+".join(
            n for n, s in (("fsdp2", layout.dp_shard), ("tp", layout.tp), ("pp", layout.pp)) if s > 1
        )
        # rank = dp_rank * (tp * pp) + model-parallel rank: the ranks of one model replica read the same batch.
        group_size = layout.tp * layout.pp
        self.dp_size, self.dp_rank = layout.dp, accelerator.process_index // group_size
        self.dp_group = _new_groups(
            [[d * group_size + m for d in range(layout.dp)] for m in range(group_size)]
        )

    def shard_model(self, model: nn.Module, output_dir: Path) -> nn.Module:
        if self.layout.tp > 1:
            return self._tensor_parallel(model, output_dir)
        return self._fully_shard(model)

    def _tensor_parallel(self, model: nn.Module, output_dir: Path) -> nn.Module:
        """Reload the (identically seeded) model through transformers, which shards it by its tp_plan."""
        from transformers.distributed import DistributedConfig

        if not (getattr(model, "_tp_plan", None) or getattr(model.config, "base_model_tp_plan", None)):
            raise ConfigError(
                f"parallel.tp_size={self.layout.tp}: transformers has no tensor-parallel plan for "
                f"{type(model).__name__}; use model.family=llama, or parallel.dp_shard_size instead"
            )
        acc, staging = self.accelerator, output_dir / ".parallel-init"
        if acc.is_main_process:
            model.save_pretrained(staging)
        acc.wait_for_everyone()
        distributed = DistributedConfig(
            tp_size=self.layout.tp, fsdp_size=self.layout.dp_shard if self.layout.dp_shard > 1 else None
        )
        sharded = type(model).from_pretrained(
            str(staging),
            distributed_config=distributed,
            attn_implementation=model.config._attn_implementation,
        )
        acc.wait_for_everyone()
        if acc.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
        check_sharded(sharded, self.layout.world)
        return sharded

    def _fully_shard(self, model: nn.Module) -> nn.Module:
        """FSDP2: each decoder layer (the model's `_no_split_modules`) is one shard unit, then the root."""
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(
            self.accelerator.device.type, (self.layout.dp_shard,), mesh_dim_names=("dp_shard",)
        )
        blocks = set(getattr(model, "_no_split_modules", None) or ())
        layers = [m for m in model.modules() if type(m).__name__ in blocks]
        if not layers:
            raise ConfigError(
                f"parallel.dp_shard_size: {type(model).__name__} names no decoder layer class to shard; {WORKS}"
            )
        for layer in layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        check_sharded(model, self.layout.world)
        return model

    def prepare(self, model: nn.Module, optimizer: Any, scheduler: Any) -> tuple:
        # Accelerate would wrap the model in DDP, which fails on DTensors; it still owns optimizer,
        # scheduler, autocast and the fp16 scaler.
        optimizer, scheduler = self.accelerator.prepare(optimizer, scheduler)
        return model, optimizer, scheduler

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def no_sync(self, model: nn.Module) -> AbstractContextManager:
        if self.layout.dp_shard == 1:
            return nullcontext()  # TP gradients are complete after each backward: nothing to defer
        return _DeferredReduce(model)

    def clip_grad_norm(self, model: nn.Module, max_norm: float) -> float:
        return clip_grad_norm_per_mesh(list(model.parameters()), max_norm)

    def global_sum(self, value: float | torch.Tensor) -> float | torch.Tensor:
        if self.dp_size == 1:
            return value
        t = value.clone() if isinstance(value, torch.Tensor) else torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t, group=self.dp_group)
        return t if isinstance(value, torch.Tensor) else float(t)

    def unwrap(self, model: nn.Module) -> nn.Module:
        return model

    @property
    def data_view(self) -> Any:
        return DataParallelView(self.accelerator, self)

    def gather_state_dict(self, model: nn.Module) -> tuple[nn.Module, dict | None]:
        """Full tensors on the main process only (every process takes part); no distributed_config is
        left on the config, so the saved folder loads as a plain model."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if hasattr(model.config, "distributed_config"):
            del model.config.distributed_config
        # Gathered tied weights are separate copies, so save_pretrained cannot see the tie: keep one name.
        first: dict[int, str] = {}
        for name, param in model.named_parameters(remove_duplicate=False):
            if first.setdefault(id(param), name) != name:
                full.pop(name, None)
        return model, full if self.accelerator.is_main_process else None


class _DeferredReduce:
    """FSDP2's no_sync: accumulate unsharded gradients locally, reduce-scatter at the last micro-step."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def __enter__(self) -> None:
        self.model.set_requires_gradient_sync(False)

    def __exit__(self, *exc: object) -> None:
        self.model.set_requires_gradient_sync(True)


def _new_groups(rank_lists: list[list[int]]) -> Any:
    """This process's group among `rank_lists` (every process must create every group, in order)."""
    mine = None
    for ranks in rank_lists:
        group = dist.new_group(ranks, backend=dist.get_backend())
        if dist.get_rank() in ranks:
            mine = group
    return mine


def check_sharded(model: nn.Module, world: int) -> None:
    """Stop the run when the requested sharding did not take effect (no parameter is a DTensor)."""
    from torch.distributed.tensor import DTensor

    if not any(isinstance(p, DTensor) for p in model.parameters()):
        raise ConfigError(
            f"the parallel layout did not take effect on {world} processes (no parameter is sharded); "
            "launch with torchrun or ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu"
        )


def clip_grad_norm_per_mesh(params: list[nn.Parameter], max_norm: float) -> float:
    """Clip the global gradient norm when gradients live on different device meshes (TP: sharded
    DTensors beside replicated plain tensors): one norm per mesh, combined, then one coefficient."""
    from torch.distributed.tensor import DTensor

    groups: dict[Any, list[torch.Tensor]] = {}
    for p in params:
        if p.grad is not None:
            groups.setdefault(p.grad.device_mesh if isinstance(p.grad, DTensor) else None, []).append(p.grad)
    squares = 0.0
    for grads in groups.values():
        norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
        norm = norm.full_tensor() if isinstance(norm, DTensor) else norm
        squares += float(norm) ** 2
    total = math.sqrt(squares)
    coef = max_norm / (total + 1e-6)  # torch.nn.utils.clip_grad_norm_'s epsilon
    if coef < 1.0:
        for grads in groups.values():
            torch._foreach_mul_(grads, coef)
    return total
