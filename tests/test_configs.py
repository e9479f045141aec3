"""Launcher configs describe topology only: every file parses, and DeepSpeed leaves the math to train.*."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import REPO

ACCELERATE_CONFIGS = sorted((REPO / "configs" / "accelerate").glob("*.yaml"))
DEEPSPEED_CONFIGS = sorted((REPO / "configs" / "deepspeed").glob("*.json"))
# Keys the experiment YAML owns (train.micro_batch_size, gradient_accumulation_steps,
# max_grad_norm, mixed_precision): Accelerate silently prefers DeepSpeed's value when both are set.
YAML_OWNED = (
    "train_micro_batch_size_per_gpu",
    "train_batch_size",
    "gradient_accumulation_steps",
    "gradient_clipping",
)


def test_the_promised_configs_exist():
    names = {p.name for p in ACCELERATE_CONFIGS}
    for name in (
        "single",
        "ddp",
        "deepspeed_zero1",
        "deepspeed_zero2",
        "deepspeed_zero3",
        "deepspeed_zero3_offload",
        "fsdp",
        "multi_node",
    ):
        assert f"{name}.yaml" in names
    assert {p.stem for p in DEEPSPEED_CONFIGS} == {"zero1", "zero2", "zero3", "zero3_offload"}


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_config_parses_and_loads(path):
    from accelerate.commands.config.config_args import load_config_from_file

    raw = yaml.safe_load(path.read_text())
    assert raw["distributed_type"] in ("NO", "MULTI_GPU", "DEEPSPEED", "FSDP")
    assert (
        "mixed_precision" not in raw and "gradient_accumulation_steps" not in raw
    )  # the experiment owns them
    config = load_config_from_file(str(path))
    assert config.num_processes >= 1
    if raw["distributed_type"] == "DEEPSPEED":
        ds_file = REPO / raw["deepspeed_config"]["deepspeed_config_file"]
        assert ds_file.is_file(), ds_file
    if raw["distributed_type"] == "FSDP":
        assert raw["fsdp_config"]["fsdp_version"] == 2


@pytest.mark.parametrize("path", DEEPSPEED_CONFIGS, ids=lambda p: p.name)
def test_deepspeed_json_keeps_auto_and_defines_no_optimizer(path):
    config = json.loads(path.read_text())
    for key in YAML_OWNED:
        assert config[key] == "auto", key
    assert config["bf16"]["enabled"] == "auto" and config["fp16"]["enabled"] == "auto"
    assert "optimizer" not in config and "scheduler" not in config
    stage = config["zero_optimization"]["stage"]
    assert stage == int(path.stem[4])
    if stage == 3:  # the final save must gather full 16-bit weights into the standard folder
        assert config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


def test_slurm_example_launches_a_recipe():
    script = (REPO / "configs" / "slurm" / "train.sbatch").read_text()
    assert (
        "accelerate launch" in script and "--machine_rank" in script and "recipes/causal/train.py" in script
    )
