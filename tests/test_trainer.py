"""The shared trainer: accumulation equals the full batch, exact resume, atomic saves, guards."""

from __future__ import annotations

import json
import math

import pytest
import torch
from accelerate import Accelerator
from conftest import make_trainer, parameters

from pretrain.config import ConfigError
from pretrain.objectives.causal import CausalLM
from pretrain.train.trainer import TrainingStopped


def assert_same_parameters(a: dict, b: dict, atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=atol, msg=key)


class SparseTargetsLM(CausalLM):
    """Causal LM that ignores tokens divisible by 3, so micro-batches hold different target counts
    (where a per-micro-batch mean would be wrong and only the summed normalisation is exact)."""

    def collate(self, examples, generator):
        batch = super().collate(examples, generator)
        batch["labels"] = batch["input_ids"].masked_fill(batch["input_ids"] % 3 == 0, -100)
        return batch


def test_gradient_accumulation_4x2_equals_8x1(tmp_path, cache_dir):
    # Adam divides by sqrt(v) + eps: float32 reassociation noise (~7e-9, measured) in near-zero gradients
    # moves a weight by up to ~1.4e-5 at eps 1e-8; eps 1e-6 damps that to 3e-7 (measured, stock and
    # chunked loss), so 1e-5 is an honest bound. A per-micro-batch mean instead of the summed
    # normalisation misses it by orders of magnitude.
    eps = "--train.adam_epsilon=1e-6"
    full = make_trainer(
        tmp_path / "full",
        "--train.max_steps=3",
        "--train.micro_batch_size=8",
        eps,
        objective_cls=SparseTargetsLM,
    )
    full.train()
    accumulated = make_trainer(
        tmp_path / "acc",
        "--train.max_steps=3",
        "--train.micro_batch_size=4",
        "--train.gradient_accumulation_steps=2",
        eps,
        objective_cls=SparseTargetsLM,
    )
    accumulated.train()
    assert_same_parameters(parameters(full), parameters(accumulated), atol=1e-5)
    assert full.state.tokens_seen == accumulated.state.tokens_seen


def test_resume_equals_uninterrupted_even_twice(tmp_path, cache_dir):
    steps = (
        "--train.max_steps=10",
        "--train.save_steps=3",
        "--train.save_total_limit=0",
        "--model.dropout=0.1",
    )
    straight = make_trainer(tmp_path / "straight", *steps)
    straight.train()
    expected = parameters(straight)

    out = tmp_path / "resumed"
    first = make_trainer(
        out,
        "--train.max_steps=10",
        "--train.save_steps=3",
        "--model.dropout=0.1",
        "--train.save_total_limit=0",
    )
    first.max_steps = 5  # an interruption after step 5 (checkpoints at 3)
    first.train()
    first.save()  # checkpoint-5
    second = make_trainer(out, *steps, "--train.resume_from_checkpoint=latest")
    second.maybe_resume()
    assert second.state.step == 5 and second.batches.position == 5
    second.max_steps = 8
    second.train()
    second.save()
    third = make_trainer(out, *steps, "--train.resume_from_checkpoint=latest")
    third.maybe_resume()
    assert third.state.step == 8
    third.train()
    assert_same_parameters(expected, parameters(third))
    assert third.scheduler.get_last_lr() == straight.scheduler.get_last_lr()


class FailingSaveAccelerator(Accelerator):
    """Writes part of a checkpoint and then dies, like a crash between two files."""

    def save_state(self, output_dir=None, **kwargs):
        super().save_state(output_dir, **kwargs)
        raise OSError("disk full (simulated)")


def test_interrupted_save_keeps_latest_on_previous_checkpoint(tmp_path, cache_dir):
    out = tmp_path / "run"
    trainer = make_trainer(out, "--train.max_steps=2")
    trainer.train()
    trainer.save()
    assert (out / "latest").read_text() == "checkpoint-2"
    failing = make_trainer(out, "--train.max_steps=4", accelerator_cls=FailingSaveAccelerator)
    failing.train()
    with pytest.raises(ConfigError, match="simulated"):  # one error: line, not a traceback
        failing.save()
    assert (out / "latest").read_text() == "checkpoint-2"
    assert not (out / "checkpoint-4").exists()
    resumed = make_trainer(out, "--train.max_steps=4", "--train.resume_from_checkpoint=latest")
    resumed.maybe_resume()
    assert resumed.state.step == 2


class PoisonedCausalLM(CausalLM):
    """Causal LM whose loss is multiplied by `factor` on chosen optimizer steps (1-based)."""

    poison: dict[int, float] = {}
    calls = 0

    def compute_loss(self, model, batch):
        out = super().compute_loss(model, batch)
        if model.training:
            PoisonedCausalLM.calls += 1
            factor = self.poison.get(PoisonedCausalLM.calls)
            if factor is not None:
                out.loss_sum = out.loss_sum * factor
        return out


def test_nonfinite_loss_skips_update_then_stops_with_checkpoint(tmp_path, cache_dir):
    PoisonedCausalLM.calls = 0
    PoisonedCausalLM.poison = {3: math.nan}
    trainer = make_trainer(tmp_path / "nan", "--train.max_steps=4", objective_cls=PoisonedCausalLM)
    trainer.max_steps = 2
    trainer.train()
    before = parameters(trainer)
    trainer.max_steps = 3
    trainer.train()  # step 3 is poisoned: no update
    assert_same_parameters(before, parameters(trainer), atol=0)
    assert trainer.state.skipped_nonfinite == 1
    trainer.max_steps = 4
    trainer.train()  # a healthy step updates again
    assert not torch.equal(before["lm_head.weight"], parameters(trainer)["lm_head.weight"])

    PoisonedCausalLM.calls = 0
    PoisonedCausalLM.poison = {i: math.inf for i in range(1, 100)}
    out = tmp_path / "stop"
    stopping = make_trainer(
        out, "--train.max_steps=20", "--train.max_nonfinite_steps=3", objective_cls=PoisonedCausalLM
    )
    with pytest.raises(TrainingStopped, match="3 consecutive steps had a non-finite loss"):
        stopping.train()
    assert (out / "latest").read_text() == "checkpoint-3"
    assert json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())["skipped_nonfinite"] == 3


def test_spike_guard_skips_the_spiking_step(tmp_path, cache_dir):
    PoisonedCausalLM.calls = 0
    PoisonedCausalLM.poison = {14: 50.0}
    trainer = make_trainer(
        tmp_path / "spike",
        "--train.max_steps=16",
        "--train.spike_threshold=6",
        objective_cls=PoisonedCausalLM,
    )
    trainer.max_steps = 13
    trainer.train()
    before = parameters(trainer)
    trainer.max_steps = 14
    trainer.train()
    assert trainer.state.skipped_spikes == 1
    assert_same_parameters(before, parameters(trainer), atol=0)
    trainer.max_steps = 16
    trainer.train()
    assert trainer.state.skipped_spikes == 1


def test_document_mask_logits_equal_packed_or_alone(tmp_path, cache_dir):
    trainer = make_trainer(tmp_path / "doc", "--train.max_steps=1", "--data.document_mask=true")
    objective, model = trainer.objective, trainer.accelerator.unwrap_model(trainer.model).eval()
    eos = objective.tokenizer.eos_token_id
    doc_a = objective.tokenizer("First document text.", add_special_tokens=False)["input_ids"] + [eos]
    doc_b = objective.tokenizer("And a second, longer one follows here.", add_special_tokens=False)[
        "input_ids"
    ] + [eos]
    packed = objective.collate([{"input_ids": torch.tensor(doc_a + doc_b)}], torch.Generator())
    with torch.no_grad():
        packed_logits = model(**{k: v for k, v in packed.items() if k != "labels"}).logits[0]
        alone_b = model(input_ids=torch.tensor([doc_b])).logits[0]
        alone_a = model(input_ids=torch.tensor([doc_a])).logits[0]
    torch.testing.assert_close(packed_logits[len(doc_a) :], alone_b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed_logits[: len(doc_a)], alone_a, rtol=1e-5, atol=1e-5)
    assert packed["position_ids"][0, len(doc_a)].item() == 0


def test_rotation_keeps_newest_best_and_latest(tmp_path):
    from pretrain.train.checkpoint import rotate_checkpoints

    for step in range(1, 6):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / "latest").write_text("checkpoint-5")
    rotate_checkpoints(tmp_path, keep=2, best="checkpoint-2")
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == [
        "checkpoint-2",
        "checkpoint-4",
        "checkpoint-5",
    ]


def test_trackers_tensorboard_and_offline_wandb(tmp_path, cache_dir, monkeypatch):
    from conftest import run_recipe

    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "tracked"
    run_recipe(
        "causal",
        out,
        "--train.max_steps=4",
        "--train.logging_steps=2",
        "--train.report_to=tensorboard,wandb",
        "--data.max_train_documents=60",
    )
    assert list(out.rglob("events.out.tfevents.*")), "no tensorboard event file"
    assert list((out / "wandb").glob("offline-run-*")), "no offline wandb run"
    lines = (out / "metrics.jsonl").read_text().splitlines()
    record = json.loads(lines[-1])
    assert record["mfu"] is None and record["peak_memory_gb"] > 0  # MFU is N/A on CPU without a peak
    assert (out / "loss_curve.png").stat().st_size > 1000
