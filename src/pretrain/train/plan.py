"""`build_plan`: the one place a run's `parallel` section becomes a plan (pretrain.train.parallel,
pretrain.train.pipeline), after refusing every layout that would not take effect as asked."""

from __future__ import annotations

import os

from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch import nn

from pretrain.config import ConfigError
from pretrain.settings import ParallelConfig
from pretrain.train.parallel import WORKS, DataParallelPlan, ShardedPlan, resolve_layout
from pretrain.train.pipeline import PipelinePlan


def check_parallel_launch(pcfg: ParallelConfig, accelerator: Accelerator) -> None:
    """Refuse, before any data is read, a launch whose requested sharding would silently not happen."""
    # `accelerate launch` with an FSDP config exports ACCELERATE_USE_FSDP; on CPU Accelerate then runs
    # plain DDP without a word (measured: accelerate 1.15), so a launch that asked for FSDP and did not
    # get it stops here.
    fsdp_asked = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("true", "1")
    if fsdp_asked and accelerator.distributed_type != DistributedType.FSDP:
        raise ConfigError(
            f"the accelerate launch config asks for FSDP but Accelerate runs {accelerator.distributed_type.value} "
            f"on {accelerator.device.type} (it does not shard there); launch with configs/accelerate/ddp.yaml "
            "and set --parallel.dp_shard_size=N (torch fully_shard)"
        )
    if not pcfg.model_parallel():
        return
    if accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP):
        raise ConfigError(
            f"the `parallel` section cannot combine with a {accelerator.distributed_type.value} launch; launch "
            "with configs/accelerate/ddp.yaml (or torchrun), or drop the parallel.* sizes"
        )
    layout = resolve_layout(pcfg, accelerator.num_processes, accelerator.device.type)
    if layout.world == 1:
        raise ConfigError(
            f"parallel sizes ({layout.describe()}) need several processes but this run has one; launch with "
            "ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N (CPU) or torchrun"
        )


def build_plan(pcfg: ParallelConfig, accelerator: Accelerator, model: nn.Module) -> DataParallelPlan:
    """The plan for this run, or a ConfigError when the layout cannot take effect as asked."""
    check_parallel_launch(pcfg, accelerator)
    if not pcfg.model_parallel():
        return DataParallelPlan(accelerator)
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if type(model).__name__ not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        raise ConfigError(f"the `parallel` section cannot shard {type(model).__name__}; {WORKS}")
    layout = resolve_layout(pcfg, accelerator.num_processes, accelerator.device.type)
    if layout.pp > 1:
        return PipelinePlan(accelerator, layout, pcfg)
    return ShardedPlan(accelerator, layout)
