"""The prefix-LM recipe end to end: contract files, falling loss, suffix metrics, stock reload."""

from __future__ import annotations

import json

import torch
from conftest import check_run_contract, run_recipe
from transformers import AutoModelForCausalLM


def test_prefix_lm_recipe_trains_and_loads_in_stock_causal_lm(tmp_path, cache_dir):
    out = tmp_path / "run"
    results = run_recipe("prefix_lm", out, "--train.max_steps=30", "--train.logging_steps=1")
    records = check_run_contract(out)
    assert records[-1]["step"] == 30
    assert records[-1]["loss"] < records[0]["loss"] - 0.8
    assert results["perplexity"] > 1 and 0 < results["bits_per_byte"] < 8
    assert json.loads((out / "eval_results.json").read_text())["eval_loss"] == results["eval_loss"]

    model = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.randint(5, model.config.vocab_size, (1, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(1, 1, 12, 12, dtype=torch.bool).tril()
    mask[..., :5, :5] = True  # a 5-token bidirectional prefix: the stock model takes the 4-D mask
    with torch.no_grad():
        bidirectional = model(ids, attention_mask=mask).logits
        causal = model(ids).logits
    assert not torch.allclose(bidirectional[:, :4], causal[:, :4])
