"""fp16 loss scaling: an overflowing step is skipped by the scaler, halves the scale, is counted, and
training goes on; a step the guards skip leaves the scaler consistent (no "unscale_() has already been
called" on the next step).

Accelerate gives CPU no GradScaler, so these tests attach `torch.amp.GradScaler("cpu")` to the
Accelerator the way Accelerate does on CUDA (`scaler` + `native_amp`): `backward` scales the loss,
`clip_grad_norm_` unscales, the wrapped optimizer's `step()` runs `scaler.step()` and `update()`.
"""

from __future__ import annotations

import json
import math

import torch
from accelerate import Accelerator
from conftest import make_trainer, parameters
from test_trainer import PoisonedCausalLM, assert_same_parameters

INIT_SCALE = 2.0**10


class CPUScalerAccelerator(Accelerator):
    """An fp16 Accelerator with the CPU GradScaler attached as Accelerate attaches the CUDA one."""

    def __init__(self, **kwargs):
        super().__init__(mixed_precision="fp16", **kwargs)
        # growth_interval large: the scale only moves by the halvings under test.
        self.scaler = torch.amp.GradScaler("cpu", init_scale=INIT_SCALE, growth_interval=10_000)
        self.native_amp = True


def inject_overflow(trainer, backward_calls: set[int]) -> None:
    """Put inf into one parameter's gradient on the chosen backward passes (1-based, one per micro-step)."""
    param = next(trainer.model.parameters())
    calls = {"n": 0}

    def hook(grad: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return torch.full_like(grad, math.inf) if calls["n"] in backward_calls else grad

    param.register_hook(hook)


def test_overflow_steps_are_skipped_halve_the_scale_and_training_goes_on(tmp_path, cache_dir):
    out = tmp_path / "fp16"
    # Four overflows in a row, more than max_nonfinite_steps: overflows are not non-finite losses.
    trainer = make_trainer(
        out,
        "--train.max_steps=6",
        "--train.max_nonfinite_steps=3",
        "--train.logging_steps=1",
        accelerator_cls=CPUScalerAccelerator,
    )
    inject_overflow(trainer, {1, 2, 3, 4})
    before = parameters(trainer)
    trainer.max_steps = 4
    trainer.train()
    assert_same_parameters(before, parameters(trainer), atol=0)
    assert trainer.state.skipped_overflow == 4 and trainer.state.skipped_nonfinite == 0
    assert trainer.accelerator.scaler.get_scale() == INIT_SCALE / 2**4
    trainer.max_steps = 6
    trainer.train()  # healthy steps update again, at the halved scale
    assert not torch.equal(before["lm_head.weight"], parameters(trainer)["lm_head.weight"])
    assert trainer.accelerator.scaler.get_scale() == INIT_SCALE / 2**4
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_overflow"] for r in records][-1] == 4
    assert records[-1]["loss_scale"] == INIT_SCALE / 2**4
    assert all(math.isfinite(r["loss"]) for r in records)


def test_overflow_in_one_accumulated_micro_step_skips_the_whole_step(tmp_path, cache_dir):
    trainer = make_trainer(
        tmp_path / "acc",
        "--train.max_steps=3",
        "--train.micro_batch_size=4",
        "--train.gradient_accumulation_steps=2",
        accelerator_cls=CPUScalerAccelerator,
    )
    inject_overflow(trainer, {3})  # the first micro-step of optimizer step 2
    trainer.max_steps = 1
    trainer.train()
    after_one = parameters(trainer)
    trainer.max_steps = 2
    trainer.train()
    assert_same_parameters(after_one, parameters(trainer), atol=0)
    assert trainer.state.skipped_overflow == 1
    assert trainer.accelerator.scaler.get_scale() == INIT_SCALE / 2
    trainer.max_steps = 3
    trainer.train()
    assert not torch.equal(after_one["lm_head.weight"], parameters(trainer)["lm_head.weight"])


def test_a_guard_skip_under_fp16_keeps_the_scaler_consistent(tmp_path, cache_dir):
    PoisonedCausalLM.calls = 0
    PoisonedCausalLM.poison = {2: math.nan}  # a non-finite *loss*: the guard's skip, not an overflow
    trainer = make_trainer(
        tmp_path / "nan",
        "--train.max_steps=3",
        objective_cls=PoisonedCausalLM,
        accelerator_cls=CPUScalerAccelerator,
    )
    trainer.train()  # before the fix, step 3 raised "unscale_() has already been called"
    assert trainer.state.step == 3
    assert trainer.state.skipped_nonfinite == 1 and trainer.state.skipped_overflow == 0
    assert trainer.accelerator.scaler.get_scale() == INIT_SCALE / 2  # its gradients were non-finite too
