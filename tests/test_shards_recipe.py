"""The causal recipe trains from `pretrain data tokenize` output: the shards' own tokenizer, a
held-out tail or a validation shard set, and exact resume over the memory-mapped stream."""

from __future__ import annotations

import json

from conftest import run_recipe

from pretrain.data.text import embedded_documents
from pretrain.prepare.tokenize import tokenize_to_shards
from pretrain.prepare.tokenize_cli import train_tokenizer


def test_causal_trains_from_tokenized_shards(tmp_path, cache_dir):
    docs = embedded_documents()
    train_txt, valid_txt = tmp_path / "train.jsonl", tmp_path / "valid.jsonl"
    train_txt.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs[:-40]))
    valid_txt.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs[-40:]))
    train_tokenizer([str(train_txt)], str(tmp_path / "tok"), 2048, sample_bytes=1_000_000)
    for name, src in (("train", train_txt), ("valid", valid_txt)):
        tokenize_to_shards(
            [str(src)], tmp_path / name, str(tmp_path / "tok"), shard_tokens=50_000, progress=False
        )
    out = tmp_path / "run"
    args = (f"--data.train_file={tmp_path / 'train'}", f"--data.validation_file={tmp_path / 'valid'}")
    results = run_recipe("causal", out, *args, "--train.max_steps=12", "--train.logging_steps=1")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 12 and records[-1]["loss"] < records[0]["loss"]
    assert results["eval_loss"] < records[0]["loss"] and "bits_per_byte" in results
    assert (out / "tokenizer.json").is_file()
