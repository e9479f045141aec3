"""The causal recipe end to end: contract files, falling loss, reload, text generation."""

from __future__ import annotations

import json

import torch
import yaml
from conftest import check_run_contract, run_recipe
from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline


def test_causal_recipe_contract_and_falling_loss(tmp_path, cache_dir):
    out = tmp_path / "run"
    results = run_recipe(
        "causal", out, "--train.max_steps=40", "--train.eval_steps=20", "--train.logging_steps=1"
    )
    records = check_run_contract(out)
    assert records[-1]["step"] == 40
    assert records[-1]["loss"] < records[0]["loss"] - 1.0
    saved = json.loads((out / "eval_results.json").read_text())
    assert saved["eval_loss"] == results["eval_loss"]
    assert saved["perplexity"] > 1 and 0 < saved["bits_per_byte"] < 8
    assert yaml.safe_load((out / "resolved_config.yaml").read_text())["train"]["max_steps"] == 40

    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.eos_token_id == tokenizer.eos_token_id
    generated = pipeline("text-generation", model=str(out), device="cpu")(
        "The list", max_new_tokens=8, do_sample=False
    )
    assert generated[0]["generated_text"].startswith("The list")
    assert len(generated[0]["generated_text"]) > len("The list")


def test_save_load_round_trip_gives_identical_logits(tmp_path, cache_dir):
    out = tmp_path / "run"
    run_recipe("causal", out, "--train.max_steps=2")
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    again = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, again(ids).logits, rtol=0, atol=0)
