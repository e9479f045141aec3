"""Memorization probe: a planted, heavily repeated training sequence is extracted; a held-out one is not."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_recipe
from transformers import GPT2Config, GPT2LMHeadModel

from pretrain.eval.cli import main as eval_main
from pretrain.eval.compression import load_causal_lm
from pretrain.eval.memorization import (
    compute_matched_lengths,
    greedy_continuations,
    memorization_report,
    probe_sequences,
    sample_sequences,
)


def _canary(seed: int, words: int = 90) -> str:
    """A sentence of random made-up words: no model predicts it unless it has seen it."""
    rng = random.Random(seed)
    letters = "bcdfghjklmnpqrstvwxz"
    return (
        "Canary: " + " ".join("".join(rng.choices(letters, k=rng.randint(4, 7))) for _ in range(words)) + "."
    )


PLANTED, HELD_OUT = _canary(1), _canary(2)


@pytest.fixture(scope="module")
def planted_run(
    tmp_path_factory: pytest.TempPathFactory, cache_dir: Path
) -> tuple[Path, list[str], list[str]]:
    """A tiny causal model trained on 100 ordinary documents plus 150 copies of PLANTED."""
    from pretrain.data.text import load_raw_datasets
    from pretrain.settings import DataConfig

    root = tmp_path_factory.mktemp("memorization")
    train_raw, valid_raw = load_raw_datasets(DataConfig())
    train_texts = list(train_raw["text"][:100]) + [PLANTED] * 150
    random.Random(0).shuffle(train_texts)
    heldout_texts = list(valid_raw["text"][:40]) + [HELD_OUT]
    (root / "train.txt").write_text("\n\n".join(train_texts))
    (root / "valid.txt").write_text("\n\n".join(heldout_texts))
    out = root / "lm"
    run_recipe(
        "causal",
        out,
        f"--data.train_file={root / 'train.txt'}",
        f"--data.validation_file={root / 'valid.txt'}",
        "--train.max_steps=80",
    )
    return out, train_texts, heldout_texts


def test_planted_sequence_is_extracted_and_held_out_one_is_not(planted_run):
    model_dir, train_texts, heldout_texts = planted_run
    model, tokenizer = load_causal_lm(model_dir)

    def windows(text: str) -> np.ndarray:
        ids = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids
        assert len(ids) >= 64 + 8
        return np.stack([ids[offset : offset + 64] for offset in (0, 4, 8)])

    assert (probe_sequences(model, windows(PLANTED), prefix_tokens=32) == 32).all()
    assert (probe_sequences(model, windows(HELD_OUT), prefix_tokens=32) < 8).all()

    report = memorization_report(model, tokenizer, train_texts, heldout_texts, num_samples=48)
    assert report["train_sequences"] == 48
    assert report["train_exact_match_rate"] > 0.3  # 150 of 250 training documents are the canary
    assert report["heldout_exact_match_rate"] == 0.0
    assert report["train_mean_matched_tokens"] > report["heldout_mean_matched_tokens"] + 10
    assert report["memorized_examples"]
    assert all(example in PLANTED for example in report["memorized_examples"])


def test_eval_cli_memorization_mode_reads_the_runs_own_data(planted_run, capsys):
    model_dir, _, _ = planted_run
    assert eval_main(["--model", str(model_dir), "--memorization", "--samples", "16"]) == 0
    printed = capsys.readouterr().out
    assert "train_exact_match_rate" in printed and "heldout_mean_matched_tokens" in printed
    saved = json.loads((model_dir / "memorization.json").read_text())
    assert saved["prefix_tokens"] == 32 and saved["continuation_tokens"] == 32
    assert saved["train_exact_match_rate"] > saved["heldout_exact_match_rate"]

    assert eval_main(["--model", str(model_dir), "--memorization", "--prefix-tokens", "60"]) == 1
    assert "exceed the model's 64 positions" in capsys.readouterr().err
    assert eval_main(["--model", str(model_dir), "--memorization", "--samples", "many"]) == 1
    assert "--samples must be a positive integer" in capsys.readouterr().err


def test_greedy_continuation_with_cache_equals_full_recomputation():
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=32, n_embd=32, n_layer=2, n_head=2)).eval()
    prefixes = torch.randint(0, 50, (3, 6))
    fast = greedy_continuations(model, prefixes, 10)
    ids = prefixes
    with torch.no_grad():
        for _ in range(10):
            ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(fast, ids[:, 6:])


def test_matched_length_counts_leading_agreement_only():
    truth = torch.tensor([[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]])
    generated = torch.tensor([[1, 2, 3, 4], [1, 9, 3, 4], [7, 2, 3, 4]])
    assert compute_matched_lengths(generated, truth).tolist() == [4, 1, 0]


def test_sampling_skips_short_documents_and_is_seeded(planted_run):
    model_dir, train_texts, _ = planted_run
    _, tokenizer = load_causal_lm(model_dir)
    texts = ["too short", *train_texts[:30]]
    a = sample_sequences(texts, tokenizer, num_samples=10, length=40, seed=3)
    b = sample_sequences(texts, tokenizer, num_samples=10, length=40, seed=3)
    assert a.shape == (10, 40) and np.array_equal(a, b)
    assert sample_sequences(["too short"], tokenizer, 5, 40, 0).shape == (0, 40)
