"""Modern pretraining options: Muon + AdamW groups, z-loss, QK-norm families, untied embeddings,
sequence-length and batch-size warmup, schedules that end on their floor."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from conftest import make_trainer, parameters
from transformers import AutoModelForCausalLM

from pretrain.config import ConfigError
from pretrain.objectives.base import token_loss
from pretrain.objectives.models import build_decoder_config
from pretrain.settings import ModelConfig, TrainConfig
from pretrain.train.optim import MuonAdamW, build_optimizer, build_scheduler, lr_multiplier
from pretrain.train.warmup import Warmups

IDS = {"bos": 0, "eos": 1, "pad": 2}


def tiny_model(family: str, tied: bool = True) -> torch.nn.Module:
    cfg = ModelConfig(family=family, hidden_size=64, num_layers=2, num_heads=4, tie_word_embeddings=tied)
    return AutoModelForCausalLM.from_config(build_decoder_config(cfg, 300, 32, IDS))


def group_params(optimizer: torch.optim.Optimizer) -> list[torch.nn.Parameter]:
    return [p for group in optimizer.param_groups for p in group["params"]]


@pytest.mark.parametrize(
    ("family", "tied"), [("gpt2", True), ("llama", False), ("olmo2", True), ("qwen3", False)]
)
def test_muon_and_adamw_groups_cover_every_parameter_once(family, tied):
    model = tiny_model(family, tied)
    expected = {id(p) for p in model.parameters()}
    head, embedding = model.get_output_embeddings().weight, model.get_input_embeddings().weight
    for name in ("adamw", "muon"):
        optimizer = build_optimizer(model, TrainConfig(optimizer=name))
        ids = [id(p) for p in group_params(optimizer)]
        assert len(ids) == len(set(ids)) == len(expected) and set(ids) == expected, name
    optimizer = build_optimizer(model, TrainConfig(optimizer="muon"))
    assert isinstance(optimizer, MuonAdamW)
    muon = group_params(optimizer.muon)
    assert muon and all(p.ndim == 2 for p in muon)
    assert not {id(head), id(embedding)} & {id(p) for p in muon}  # lookups and the head stay on AdamW
    assert (head is embedding) == tied


def test_z_loss_adds_weight_times_squared_logsumexp():
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 50, requires_grad=True)
    labels = torch.randint(0, 50, (3, 7))
    labels[0, :3] = -100
    token_bytes = torch.ones(50, dtype=torch.long)
    weight = 1e-2
    out = token_loss(logits, labels, token_bytes, with_stats=False, z_loss_weight=weight)
    plain = token_loss(logits, labels, token_bytes, with_stats=False)
    valid = labels.reshape(-1) != -100
    lse = torch.logsumexp(logits.reshape(-1, 50), -1)[valid]
    torch.testing.assert_close(out.loss_sum, plain.loss_sum)  # the cross-entropy itself is unchanged
    torch.testing.assert_close(out.aux_sum, weight * (lse**2).sum())
    assert out.num_targets == valid.sum() == plain.num_targets
    (grad,) = torch.autograd.grad(out.training_loss(), logits)
    (expected,) = torch.autograd.grad(plain.loss_sum + weight * (lse**2).sum(), logits)
    torch.testing.assert_close(grad, expected)


def test_chunked_head_z_loss_equals_the_full_logits_one():
    from pretrain.objectives.head_loss import ChunkedCrossEntropy

    torch.manual_seed(0)
    hidden = torch.randn(20, 8, requires_grad=True)
    weight = torch.randn(30, 8, requires_grad=True)
    labels = torch.randint(0, 30, (20,))
    labels[:3] = -100
    total, z_sum = ChunkedCrossEntropy.apply(hidden, weight, labels, 7, torch.float32, 1e-2)
    grads = torch.autograd.grad(total, (hidden, weight))
    full = token_loss((hidden @ weight.T)[None], labels[None], torch.ones(30, dtype=torch.long), False, 1e-2)
    torch.testing.assert_close(total - z_sum, full.loss_sum)
    torch.testing.assert_close(z_sum, full.aux_sum)
    for got, expected in zip(grads, torch.autograd.grad(full.training_loss(), (hidden, weight)), strict=True):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["cosine", "linear", "wsd"])
def test_schedules_reach_the_floor_at_the_last_step(kind):
    cfg = TrainConfig(
        lr_scheduler_type=kind, warmup_steps=4, max_steps=40, min_lr_ratio=0.1, learning_rate=1e-3
    )
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.learning_rate)
    scheduler = build_scheduler(optimizer, cfg, cfg.max_steps)
    used = []
    for _ in range(cfg.max_steps):  # the rate each optimizer step runs with
        used.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert used[3] == pytest.approx(1e-3)  # peak at the end of warmup
    assert used[-1] == pytest.approx(1e-4)  # the floor, at the last step that runs
    assert all(a >= b - 1e-12 for a, b in zip(used[3:-1], used[4:], strict=True))  # never rises after warmup
    if kind == "wsd":  # stable at the peak, then the last 20 % (steps 32..39) decays from it
        assert used[32] == pytest.approx(1e-3) and used[33] < 1e-3


def test_warmup_not_shorter_than_the_run_warns_in_one_line():
    cfg = TrainConfig(warmup_steps=50, max_steps=50)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_scheduler(optimizer, cfg, 50)
    assert len(caught) == 1 and "train.warmup_steps=50" in str(caught[0].message)
    assert "\n" not in str(caught[0].message)
    assert lr_multiplier(49, cfg, 50) == 1.0


@pytest.mark.parametrize(
    "override", ["--train.z_loss_weight=2", "--train.min_lr_ratio=1.5", "--train.warmup_steps=-1"]
)
def test_out_of_range_values_are_refused(tmp_path, override):
    with pytest.raises(ConfigError):
        make_trainer(tmp_path, override)


def test_warmup_ramps_in_tokens():
    warm = Warmups(seq_len=256, seq_start=64, seq_tokens=1000, accumulation=4, batch_tokens=900)
    assert [warm.seq_len_at(t) for t in (0, 400, 600, 999, 1000)] == [64, 128, 128, 128, 256]
    assert [warm.accumulation_at(t) for t in (0, 300, 600, 899, 900)] == [1, 2, 3, 3, 4]
    batch = {"input_ids": torch.arange(512).reshape(2, 256), "labels": torch.arange(512).reshape(2, 256)}
    short = warm.shorten(batch, 0)
    assert short["input_ids"].shape == (8, 64) and torch.equal(
        short["input_ids"].flatten(), batch["input_ids"].flatten()
    )


def test_trainer_logs_z_loss_and_resumes_exactly_with_muon_and_warmups(tmp_path, cache_dir):
    # Tiny rows are 64 tokens, micro-batches 8 rows: 512 tokens per micro-step.
    common = (
        "--train.max_steps=4",
        "--train.warmup_steps=1",
        "--train.optimizer=muon",
        "--train.z_loss_weight=1e-4",
        "--train.logging_steps=1",
        "--train.gradient_accumulation_steps=2",
        "--train.batch_size_warmup_tokens=1024",  # steps 1-2 take one micro-step, then two
        "--train.seq_len_warmup_tokens=1024",
        "--train.seq_len_warmup_start=16",
    )
    straight = make_trainer(tmp_path / "straight", *common)
    straight.train()
    assert straight.state.tokens_seen == 512 + 512 + 1024 + 1024
    records = [
        json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    ]
    # logsumexp of a fresh model's logits is about ln(vocab): z_loss ~ 1e-4 * ln(2048)^2 ~ 6e-3.
    assert all(0 < r["z_loss"] < 0.05 and math.isfinite(r["loss"]) for r in records)

    out = tmp_path / "resumed"
    first = make_trainer(out, *common, "--train.save_total_limit=0")
    first.max_steps = 2
    first.train()
    first.save()
    second = make_trainer(out, *common, "--train.resume_from_checkpoint=latest")
    second.maybe_resume()
    second.train()
    assert second.state.tokens_seen == straight.state.tokens_seen
    for key, value in parameters(straight).items():
        torch.testing.assert_close(parameters(second)[key], value, rtol=0, atol=1e-6, msg=key)


def test_qk_norm_family_trains_and_loads_with_stock_transformers(tmp_path, cache_dir):
    from conftest import run_recipe

    out = tmp_path / "olmo2"
    run_recipe(
        "causal",
        out,
        "--model.family=olmo2",
        "--model.tie_word_embeddings=false",
        "--train.max_steps=2",
        "--train.eval_steps=0",
        "--train.warmup_steps=1",
    )
    model = AutoModelForCausalLM.from_pretrained(out)
    assert type(model).__name__ == "Olmo2ForCausalLM"
    assert hasattr(model.model.layers[0].self_attn, "q_norm")
    assert model.lm_head.weight is not model.get_input_embeddings().weight
