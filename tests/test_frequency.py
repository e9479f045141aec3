"""Loss by token frequency: buckets by training-count rank partition the targets and the loss exactly,
and a short causal run reports them, frequent tokens already cheaper than rare ones."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from conftest import make_trainer, run_recipe

from pretrain.eval.frequency import (
    TokenBuckets,
    bucket_names,
    compute_token_buckets,
    count_token_ids,
    load_or_count,
    training_token_counts,
)
from pretrain.eval.harness import evaluate


def test_buckets_are_ranks_of_the_training_counts():
    # token 3 is the most frequent, then 0, then 1 and 4 tie (id breaks the tie), 2 and 5 are unseen.
    counts = count_token_ids([np.array([3, 3, 3, 0, 0]), np.array([[1, 4], [3, 0]])], vocab_size=6)
    assert counts.tolist() == [3, 1, 0, 4, 1, 0]
    buckets = compute_token_buckets(counts, edges=(1, 3))
    # ranks: 3 -> 1, 0 -> 2, 1 -> 3, 4 -> 4; buckets: ranks 1, 2-3, 4+, unseen
    assert buckets.tolist() == [1, 1, 3, 0, 2, 3]
    assert bucket_names((1, 3)) == ["ranks 1-1", "ranks 2-3", "ranks 4+", "unseen"]
    with pytest.raises(ValueError, match="strictly increasing"):
        compute_token_buckets(counts, edges=(3, 3))


def test_counts_are_cached_and_streamed_in_chunks(tmp_path, monkeypatch):
    import pretrain.eval.frequency as frequency

    monkeypatch.setattr(frequency, "COUNT_CHUNK_TOKENS", 7)  # many chunks per array
    arrays = [np.arange(50) % 10, np.full(13, 9)]
    path = tmp_path / "counts.npy"
    counts = load_or_count(path, arrays, vocab_size=10)
    assert counts.tolist() == [5] * 9 + [18]
    assert path.is_file()
    # A second call reads the cache: counting nothing returns the same numbers.
    assert load_or_count(path, [], vocab_size=10).tolist() == counts.tolist()
    with pytest.raises(ValueError, match="token ids"):
        count_token_ids([np.array([10])], vocab_size=10)


def test_buckets_partition_the_targets_and_the_loss(tmp_path, cache_dir):
    trainer = make_trainer(tmp_path / "freq", "--train.max_steps=2")
    objective, data = trainer.objective, trainer.eval_data
    counts = training_token_counts(trainer.batches.dataset, len(objective.tokenizer))
    assert counts.sum() == trainer.batches.dataset.blocks.size
    # The embedded corpus sits in a datasets cache, so the counts are cached beside it.
    cache_dir_files = list(cache_dir.rglob("token-counts-*.npy"))
    assert cache_dir_files
    buckets = TokenBuckets(counts, (10, 100, 1000), objective.token_bytes)
    model = trainer.accelerator.unwrap_model(trainer.model)
    metrics = evaluate(objective, model, data, Accelerator(), batch_size=4, frequency=buckets)
    records = metrics["loss_by_frequency"]
    assert [r["name"] for r in records] == [
        "ranks 1-10",
        "ranks 11-100",
        "ranks 101-1000",
        "ranks 1001+",
        "unseen",
    ]
    targets = len(data) * (data.blocks.shape[1] - 1)
    assert sum(r["targets"] for r in records) == targets
    assert math.isclose(sum(r["share"] for r in records), 1.0, rel_tol=1e-12)
    total_loss = sum(r["loss_sum"] for r in records)
    assert math.isclose(total_loss / targets, metrics["eval_loss"], rel_tol=1e-6)
    # Each bucket's target count matches a direct count over the evaluation targets.
    ids = torch.from_numpy(np.asarray(data.blocks[:, 1:], dtype=np.int64)).reshape(-1)
    direct = torch.bincount(buckets.bucket_of[ids], minlength=len(records)).tolist()
    assert [r["targets"] for r in records] == direct


def test_a_short_causal_run_reports_loss_by_frequency(tmp_path, cache_dir):
    out = tmp_path / "run"
    run_recipe(
        "causal",
        out,
        "--train.max_steps=20",
        "--train.eval_steps=10",
        "--train.eval_max_batches=4",
        "--data.max_train_documents=120",
    )
    results = json.loads((out / "eval_results.json").read_text())
    records = results["loss_by_frequency"]
    assert all({"name", "share", "loss", "bits_per_byte"} <= set(r) for r in records)
    seen = [r for r in records if r["name"] != "unseen" and r["targets"] > 0]
    assert seen[0]["name"] == "ranks 1-100"
    assert seen[0]["loss"] < seen[-1]["loss"]
    history = [json.loads(ln) for ln in (out / "eval_history.jsonl").read_text().splitlines()]
    assert history[0]["step"] == 10 and len(history[0]["loss_by_frequency"]) == len(records)
    assert (out / "loss_by_frequency.png").is_file()
