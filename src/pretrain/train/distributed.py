"""What the trainer must tell the distributed engines that Accelerate cannot infer for it.

DeepSpeed reads batch size, accumulation and clipping from its JSON; ours keep them "auto" so the
experiment YAML stays the one source of truth. Accelerate fills "auto" from a prepared dataloader,
which this trainer does not hand over (it batches itself, resumably), so we fill them here.
"""

from __future__ import annotations

from accelerate import Accelerator
from accelerate.utils import DistributedType

from pretrain.config import ConfigError
from pretrain.settings import TrainConfig


def uses_deepspeed(accelerator: Accelerator) -> bool:
    return accelerator.distributed_type == DistributedType.DEEPSPEED


def configure_deepspeed(accelerator: Accelerator, cfg: TrainConfig) -> None:
    """Fill DeepSpeed's "auto" batch/accumulation/clipping keys from `train.*`, before `prepare`.

    A concrete value in the JSON that disagrees with the experiment is refused: Accelerate would
    otherwise silently prefer DeepSpeed's number.
    """
    ds_config = accelerator.state.deepspeed_plugin.deepspeed_config
    accumulation = cfg.gradient_accumulation_steps
    owned = {
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": accumulation,
        "train_batch_size": cfg.micro_batch_size * accumulation * accelerator.num_processes,
        "gradient_clipping": cfg.max_grad_norm,
    }
    for key, value in owned.items():
        current = ds_config.get(key, "auto")
        if current == "auto":
            ds_config[key] = value
        elif float(current) != float(value):
            raise ConfigError(
                f"the DeepSpeed config sets {key}={current} but the experiment gives {value}; "
                f'set it to "auto" in the DeepSpeed JSON (train.* owns it)'
            )
    accelerator.gradient_accumulation_steps = accumulation
