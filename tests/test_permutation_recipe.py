"""The permutation (XLNet) recipe end to end: contract files, falling loss, stock reload, fixed eval."""

from __future__ import annotations

import json
import math

import torch
import yaml
from accelerate import Accelerator
from conftest import check_run_contract, run_recipe
from transformers import AutoTokenizer, XLNetLMHeadModel

from pretrain.config import build_config, load_yaml
from pretrain.data.packing import pack_blocks
from pretrain.eval.harness import evaluate
from pretrain.objectives.permutation import PermutationConfig, PermutationLM
from pretrain.settings import make_run_config


def test_permutation_recipe_contract_falling_loss_and_stock_reload(tmp_path, cache_dir):
    out = tmp_path / "run"
    results = run_recipe(
        "permutation", out, "--train.max_steps=30", "--train.eval_steps=15", "--train.logging_steps=1"
    )
    records = check_run_contract(out)
    losses = [r["loss"] for r in records]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5
    saved = json.loads((out / "eval_results.json").read_text())
    assert saved["eval_loss"] == results["eval_loss"]
    assert math.isclose(saved["perplexity"], math.exp(saved["eval_loss"]))
    assert "bits_per_byte" not in saved, "only a sixth of the tokens are coded: no bits per byte"
    assert yaml.safe_load((out / "resolved_config.yaml").read_text())["objective"]["max_span_length"] == 5

    model, info = XLNetLMHeadModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    tokenizer = AutoTokenizer.from_pretrained(out)
    cfg = build_config(make_run_config(PermutationConfig), load_yaml(out / "resolved_config.yaml"))
    objective = PermutationLM(cfg, tokenizer)
    stream = tokenizer("The list type supports slicing and sorting. " * 40)["input_ids"]
    blocks = pack_blocks(torch.tensor(stream, dtype=torch.int32).numpy(), cfg.data.seq_len)
    # Each evaluation batch draws its targets and order from a fixed seed: the same model scores the same.
    first = evaluate(objective, model, blocks, Accelerator(), batch_size=4)
    again = evaluate(objective, model, blocks, Accelerator(), batch_size=4)
    assert first == again and math.isfinite(first["eval_loss"])
