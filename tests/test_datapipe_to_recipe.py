"""The causal recipe trains directly on `pretrain data prepare`'s output directory."""

from __future__ import annotations

import json
import random

from conftest import run_recipe

from pretrain.data.text import load_text_file
from pretrain.prepare.cli import main as data_main


def test_recipe_trains_on_pipeline_output(tmp_path, cache_dir):
    rng = random.Random(0)
    words = (
        "the a river city old new bridge market winter summer people built walked across found small".split()
    )
    docs = [
        " ".join(rng.choice(words) for _ in range(rng.randint(60, 120))).capitalize() + "."
        for _ in range(300)
    ]
    docs += docs[:50]  # exact duplicates the pipeline must drop
    raw = tmp_path / "raw.jsonl"
    raw.write_text(
        "".join(json.dumps({"text": d + " Contact me at jane.doe@example.com."}) + "\n" for d in docs)
    )
    clean = tmp_path / "clean"
    stages = "--pipeline.stages=normalize,exact_dedup,pii"
    assert data_main(["prepare", "--input", str(raw), "--output", str(clean), stages]) == 0
    prepared = load_text_file(str(clean))  # the <task>.jsonl.gz shards of the default local executor
    assert len(prepared) == 300 and all("<EMAIL>" in t for t in prepared["text"])

    out = tmp_path / "run"
    results = run_recipe(
        "causal", out, f"--data.train_file={clean}", "--data.seq_len=32", "--train.max_steps=3"
    )
    assert (out / "model.safetensors").is_file() and results["eval_loss"] > 0
