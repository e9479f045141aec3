"""`build_plan`: the one place a run's `parallel` section becomes a plan (pretrain.train.parallel,
pretrain.train.pipeline), after refusing every layout that would not take effect as asked."""

from __future__ import annotations

import os

from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch import nn

from pretrain.config import ConfigError
from pretrain.settings import ModelConfig, ParallelConfig
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


DECODER_FAMILIES = ("gpt2", "llama", "olmo2", "qwen3")  # causal LMs: what the `parallel` section shards
PIPELINE_FAMILIES = ("llama",)  # pipeline stages are built for LlamaForCausalLM (pretrain.train.pipeline)


def check_parallel_family(
    pcfg: ParallelConfig, mcfg: ModelConfig, document_mask: bool, objective_cls: type
) -> None:
    """Refuse, at config time, a `parallel` layout the objective or model family cannot train, naming what
    works (pretrained weights, model.model_name_or_path, are checked by their class in build_plan)."""
    if not pcfg.model_parallel():
        return
    family = None if mcfg.model_name_or_path else mcfg.family
    if not set(objective_cls.families) & set(DECODER_FAMILIES) or family not in (None, *DECODER_FAMILIES):
        raise ConfigError(
            f"the `parallel` section shards decoder-only models, not objective {objective_cls.name} on "
            f"model.family={mcfg.family}; {WORKS}"
        )
    if pcfg.tp_size > 1 and family is not None:
        from transformers import AutoConfig

        if not AutoConfig.for_model(family).base_model_tp_plan:
            raise ConfigError(
                f"parallel.tp_size={pcfg.tp_size}: transformers has no tensor-parallel plan for model.family={family}; "
                "use llama, olmo2 or qwen3, or parallel.dp_shard_size instead"
            )
    if pcfg.pp_size > 1 and family not in (None, *PIPELINE_FAMILIES):
        raise ConfigError(
            f"parallel.pp_size={pcfg.pp_size}: pipeline stages are built for {', '.join(PIPELINE_FAMILIES)}, not "
            f"model.family={family}; use model.family=llama, or parallel.tp_size / dp_shard_size"
        )
    if pcfg.pp_size > 1 and (document_mask or not objective_cls.pipeline_inputs_only):
        what = "data.document_mask" if document_mask else f"objective {objective_cls.name}"
        raise ConfigError(
            f"parallel.pp_size={pcfg.pp_size}: pipeline stages pass only input_ids, but {what} adds attention "
            "masks and positions to each batch; use parallel.tp_size or parallel.dp_shard_size for it"
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
