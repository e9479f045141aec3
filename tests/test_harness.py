"""The evaluation harness: bits per byte by hand, identical results however the set is batched."""

from __future__ import annotations

import math

import torch
from accelerate import Accelerator
from conftest import make_trainer

from pretrain.eval.harness import evaluate


def test_bits_per_byte_matches_a_hand_computation(tmp_path, cache_dir):
    trainer = make_trainer(tmp_path / "bpb", "--train.max_steps=3")
    trainer.train()
    objective, data = trainer.objective, trainer.eval_data
    model = trainer.accelerator.unwrap_model(trainer.model).eval()
    tokenizer = objective.tokenizer

    nll_nats, n_bytes, n_targets = 0.0, 0, 0
    with torch.no_grad():
        for i in range(len(data)):
            ids = data[i]["input_ids"]
            log_probs = torch.log_softmax(model(ids[None]).logits[0].double(), dim=-1)
            for pos in range(1, len(ids)):
                nll_nats -= log_probs[pos - 1, ids[pos]].item()
                n_targets += 1
            # The evaluated text is what the targets (every token but the first) spell out.
            n_bytes += len(tokenizer.decode(ids[1:].tolist(), skip_special_tokens=True).encode("utf-8"))

    metrics = evaluate(objective, model, data, Accelerator(), batch_size=4)
    # first token of every block is context only: targets = blocks * (seq_len - 1)
    assert n_targets == len(data) * (data.blocks.shape[1] - 1)
    expected_loss = nll_nats / n_targets
    assert math.isclose(metrics["eval_loss"], expected_loss, rel_tol=1e-5)
    assert math.isclose(metrics["perplexity"], math.exp(expected_loss), rel_tol=1e-5)
    # Decoding whole blocks can differ from the per-token byte table only where a block boundary
    # splits a multi-byte character (a few bytes in ~25k), hence 1e-3 on the byte count.
    assert math.isclose(metrics["bits_per_byte"], nll_nats / (math.log(2) * n_bytes), rel_tol=1e-3)


def test_eval_is_independent_of_batch_size_and_capped_by_max_batches(tmp_path, cache_dir):
    trainer = make_trainer(tmp_path / "bs", "--train.max_steps=1")
    model = trainer.accelerator.unwrap_model(trainer.model)
    acc = trainer.accelerator
    a = evaluate(trainer.objective, model, trainer.eval_data, acc, batch_size=3)
    b = evaluate(trainer.objective, model, trainer.eval_data, acc, batch_size=16)
    for key in a:
        assert math.isclose(a[key], b[key], rel_tol=1e-6), key
    capped = evaluate(trainer.objective, model, trainer.eval_data, acc, batch_size=4, max_batches=1)
    assert capped["eval_loss"] != a["eval_loss"]
