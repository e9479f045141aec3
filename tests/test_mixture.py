"""Weighted mixtures of sources (data.sources): draw rates, per-source epochs, exact resume, the causal
recipe's mixture.yaml, and the bad-input cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, TINY, parameters, train_straight_and_resumed

from pretrain.data.mixture import MixtureBlocks, MixtureSchedule, SourceSets
from pretrain.data.shard_set import load_shard_set
from pretrain.data.shards import write_shard
from pretrain.data.text import embedded_documents
from pretrain.prepare.tokenize import tokenize_to_shards
from pretrain.prepare.tokenize_cli import train_tokenizer

SEQ = 4


def numbered_source(root: Path, s: int, blocks: int) -> object:
    """A bare shard whose block b holds ids s*10000 + 4b ... (so every drawn block names its source and index)."""
    ids = (s * 10_000 + np.arange(blocks * SEQ)).astype(np.int32)
    write_shard(root / f"src{s}", [ids[i : i + 10] for i in range(0, len(ids), 10)], np.dtype(np.int32))
    return load_shard_set(root / f"src{s}")


def test_rates_match_weights_and_each_epoch_visits_every_block_once(tmp_path):
    sizes, weights = (500, 200, 37), (0.6, 0.3, 0.1)
    sets = tuple(numbered_source(tmp_path, s, n) for s, n in enumerate(sizes))
    mixture = MixtureBlocks(SourceSets(("a", "b", "c"), weights, sets), SEQ)
    slots = 20_000
    first = np.array([int(item["input_ids"][0]) for item in mixture.blocks_at(np.arange(slots), seed=3)])
    source, block = first // 10_000, (first % 10_000) // SEQ
    rates = np.bincount(source, minlength=3) / slots
    assert np.all(np.abs(rates - weights) <= 0.01 * np.asarray(weights)), rates
    for s, n in enumerate(sizes):  # epoch e of source s = its draws e*n .. (e+1)*n-1: a permutation
        drawn = block[source == s]
        for e in range(2):
            assert sorted(drawn[e * n : (e + 1) * n]) == list(range(n))
        assert not np.array_equal(drawn[:n], drawn[n : 2 * n])  # a fresh order per epoch
    metrics = mixture.source_metrics(slots)
    assert sum(metrics["tokens_seen_by_source"].values()) == slots * SEQ
    assert metrics["epochs_by_source"]["c"] == pytest.approx(np.sum(source == 2) / 37)
    # A pure function of (seed, slot): any chunking of the slots gives the same blocks.
    again = [int(mixture.blocks_at(np.array([g]), seed=3)[0]["input_ids"][0]) for g in (0, 7, 19_999)]
    assert again == [first[0], first[7], first[19_999]]


def test_schedule_counts_are_exact_at_any_slot():
    schedule = MixtureSchedule([3.0, 1.0], window=64)
    source, k = schedule.locate(np.arange(1000))
    for s in range(2):  # the k-th block of source s is k = its number of earlier slots
        assert np.array_equal(k[source == s], np.arange(np.sum(source == s)))
    assert list(schedule.drawn(1000)) == [np.sum(source == 0), np.sum(source == 1)]


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(prose shards, code shards, raw code jsonl): halves of the embedded corpus, one 2048-token BPE."""
    root = tmp_path_factory.mktemp("mixture")
    docs = embedded_documents()
    prose, code = root / "prose.jsonl", root / "code.jsonl"
    prose.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs[:300]))
    code.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs[300:450]))
    train_tokenizer([str(prose)], str(root / "tok"), 2048, sample_bytes=1_000_000)
    for name, src in (("prose", prose), ("code", code)):
        tokenize_to_shards([str(src)], root / name, str(root / "tok"), shard_tokens=40_000, progress=False)
    return root / "prose", root / "code", code


def sources_arg(a: Path, b: Path, repeat: bool = True) -> tuple[str, ...]:
    return (
        f"--data.sources=[{{path: {a}, weight: 3}}, {{path: {b}, weight: 1}}]",
        f"--data.mixture_repeat={str(repeat).lower()}",
    )


def test_mixture_resume_equals_uninterrupted(tmp_path, cache_dir, two_sources):
    prose, code, _ = two_sources
    shape = ("--data.seq_len=32", "--train.micro_batch_size=4")
    steps = (
        *sources_arg(prose, code),
        *shape,
        "--train.max_steps=10",
        "--train.save_steps=5",
        "--train.logging_steps=1",
    )
    straight, resumed = train_straight_and_resumed(tmp_path, *steps, stop_after=5)
    for name, value in parameters(straight).items():
        assert np.array_equal(value.numpy(), parameters(resumed)[name].numpy()), name
    rows = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 11))
    for row in rows:
        by_source = row["tokens_seen_by_source"]
        assert set(by_source) == {"prose", "code"} and sum(by_source.values()) == row["tokens_seen"]
    assert rows[-1]["tokens_seen_by_source"]["prose"] == 3 * rows[-1]["tokens_seen_by_source"]["code"]


def run_main(*argv: str) -> int:
    """The recipe entry point in this process (fresh Accelerate state), as `recipes/causal/train.py` runs it."""
    from accelerate.state import AcceleratorState, GradientState

    from pretrain.objectives.causal import CausalLM
    from pretrain.runner import main

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    return main(CausalLM, list(argv), REPO / "recipes" / "causal" / "config.yaml")


def test_causal_recipe_trains_from_the_mixture_yaml(tmp_path, cache_dir, two_sources, monkeypatch):
    prose, _, code_jsonl = two_sources
    (tmp_path / "data" / "shards").mkdir(parents=True)
    (tmp_path / "data" / "shards" / "prose").symlink_to(prose)
    (tmp_path / "data" / "code.jsonl").symlink_to(code_jsonl)  # raw: tokenized and cached on first use
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    args = (*TINY, f"--train.output_dir={out}", "--train.max_steps=12", "--train.logging_steps=2")
    assert run_main(str(REPO / "recipes" / "causal" / "mixture.yaml"), *args) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert set(rows[-1]["tokens_seen_by_source"]) == {"prose", "code"}
    results = json.loads((out / "eval_results.json").read_text())
    assert set(results["eval_loss_by_source"]) == {"prose", "code"}
    assert min(results["eval_loss_by_source"].values()) <= results["eval_loss"]
    assert max(results["eval_loss_by_source"].values()) >= results["eval_loss"]


def test_bad_mixture_inputs_fail_with_one_error_line(tmp_path, cache_dir, two_sources, capsys):
    prose, code, _ = two_sources
    write_shard(tmp_path / "empty", [], np.dtype(np.uint16))
    cases = {
        "weight 0": ([f"--data.sources=[{{path: {prose}, weight: 0}}, {{path: {code}}}]"], "weight"),
        "negative": ([f"--data.sources=[{{path: {prose}, weight: -1}}]"], "weight"),
        "missing": ([f"--data.sources=[{{path: {prose}}}, {{path: {tmp_path / 'nope'}}}]"], "does not exist"),
        "empty set": ([f"--data.sources=[{{path: {prose}}}, {{path: {tmp_path / 'empty'}}}]"], "no tokens"),
        "no repeat": ([*sources_arg(code, prose, repeat=False), "--train.max_steps=400"], "mixture_repeat"),
    }
    for label, (argv, expected) in cases.items():
        out = tmp_path / label.replace(" ", "-")
        assert run_main(*TINY, f"--train.output_dir={out}", *argv) == 1, label
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and expected in err[0], (label, err)
        assert not (out / "model.safetensors").exists() and not list(out.glob("checkpoint-*"))
