"""The T5 recipe end to end: contract files, falling loss, target metrics, stock reload and generation."""

from __future__ import annotations

import pytest
import torch
from conftest import check_run_contract, run_recipe
from transformers import AutoTokenizer, T5ForConditionalGeneration

from pretrain.config import ConfigError
from pretrain.data.packing import pack_blocks, token_stream, tokenize_dataset
from pretrain.data.text import load_raw_datasets
from pretrain.objectives.span_corruption import corrupt_spans
from pretrain.settings import DataConfig


def test_t5_recipe_trains_and_generates_sentinel_spans(tmp_path, cache_dir):
    out = tmp_path / "run"
    results = run_recipe("t5", out, "--train.max_steps=30", "--train.logging_steps=1")
    records = check_run_contract(out)
    assert records[-1]["step"] == 30
    assert records[-1]["loss"] < records[0]["loss"] - 1.0
    assert set(results) >= {"eval_loss", "perplexity", "token_accuracy"} and "bits_per_byte" not in results
    assert results["perplexity"] > 1 and 0 < results["token_accuracy"] < 1

    model = T5ForConditionalGeneration.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.decoder_start_token_id == tokenizer.pad_token_id
    sentinels = tokenizer.convert_tokens_to_ids([f"<extra_id_{k}>" for k in range(100)])
    assert (
        sentinels == list(range(sentinels[0], sentinels[0] + 100)) and tokenizer.unk_token_id not in sentinels
    )

    # Corrupt a held-out window the way training does and let stock generate() fill the spans.
    _, valid_raw = load_raw_datasets(DataConfig(cache_dir=str(cache_dir)))
    window = pack_blocks(token_stream(tokenize_dataset(valid_raw, tokenizer)), 70).blocks[:1]  # 70 raw -> 64
    input_ids, _ = corrupt_spans(
        torch.from_numpy(window).long(),
        0.15,
        3.0,
        torch.tensor(sentinels),
        tokenizer.eos_token_id,
        torch.Generator().manual_seed(0),
    )
    generated = model.generate(input_ids=input_ids, max_new_tokens=16, do_sample=False)[0].tolist()
    assert generated[0] == tokenizer.pad_token_id and generated[1] == sentinels[0]
    text = tokenizer.decode(generated)
    assert "<extra_id_0>" in text


def test_t5_refuses_fp16(tmp_path, cache_dir):
    with pytest.raises(ConfigError, match="bf16"):
        run_recipe("t5", tmp_path / "run", "--train.mixed_precision=fp16", "--train.max_steps=1")
