"""Real streaming (data.streaming=true): blocks packed on the fly equal the documents' ids plus EOS, the
stream state and partial block restore exactly without re-reading, and training resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, TINY, parameters, train_straight_and_resumed

from pretrain.data.fast_encode import batch_encoder
from pretrain.data.streaming import StreamBatches, StreamBlocks, stream_file
from pretrain.data.text import embedded_documents
from pretrain.data.tokenizer import load_tokenizer
from pretrain.prepare.tokenize_cli import train_tokenizer


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path, Path, list[str]]:
    """(train jsonl, validation jsonl, a 2048-token BPE trained on them, the training documents)."""
    root = tmp_path_factory.mktemp("streaming")
    docs = embedded_documents()
    train, valid = root / "train.jsonl", root / "valid.jsonl"
    train.write_text("".join(json.dumps({"text": d[:1500]}) + "\n" for d in docs[:160]))
    valid.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs[160:190]))
    train_tokenizer([str(train)], str(root / "tok"), 2048, sample_bytes=1_000_000)
    return train, valid, root / "tok", [d[:1500] for d in docs[:160]]


def stack(items: list[dict[str, torch.Tensor]], generator: torch.Generator) -> dict[str, torch.Tensor]:
    return {"input_ids": torch.stack([i["input_ids"] for i in items])}


def batches(path: Path, tok, seq_len: int = 64, counter: list | None = None) -> StreamBatches:
    counter = [] if counter is None else counter
    stream = stream_file(str(path)).map(lambda row: counter.append(1) or row)  # counts the documents read
    return StreamBatches(StreamBlocks(stream, tok, seq_len), stack, micro_batch_size=4, seed=0)


def test_blocks_are_the_documents_ids_with_eos_over_passes(tmp_path, corpus):
    _, _, tok_dir, docs = corpus
    tok = load_tokenizer(str(tok_dir))
    small = tmp_path / "small.jsonl"
    small.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs[:5]))
    reader = batches(small, tok)
    expected = np.concatenate([np.append(ids, tok.eos_token_id) for ids in batch_encoder(tok)(docs[:5])])
    n_blocks = 3 * len(expected) // 64  # about three passes over the five documents
    got = torch.cat([next(reader)["input_ids"].flatten() for _ in range(-(-n_blocks // 4))]).numpy()
    assert np.array_equal(got, np.resize(expected, len(got)))
    assert reader.passes >= 2


def test_state_restores_the_stream_and_partial_block_without_rereading(corpus):
    train, _, tok_dir, _ = corpus
    tok = load_tokenizer(str(tok_dir))
    straight = batches(train, tok)
    expected = [next(straight)["input_ids"] for _ in range(30)]
    first = batches(train, tok)
    for _ in range(20):
        next(first)
    state = json.loads(json.dumps(first.state_dict()))  # as trainer_state.json holds it
    assert len(state["ranks"]) == 1 and state["ranks"][0]["buffer"]  # a partial block is carried
    read_after_resume: list = []
    resumed = batches(train, tok, counter=read_after_resume)
    resumed.load_state_dict(state)
    for k in range(20, 30):
        assert torch.equal(next(resumed)["input_ids"], expected[k])
    documents_needed = 10 * 4 * 64 // 300 + 1  # 10 micro-batches of 4 x 64 tokens, documents >= 300 tokens
    assert 0 < len(read_after_resume) <= documents_needed + 2 * 16


def test_streaming_10_steps_equal_5_resume_5(tmp_path, cache_dir, corpus):
    train, valid, tok_dir, _ = corpus
    args = (
        "--data.streaming=true",
        f"--data.train_file={train}",
        f"--data.validation_file={valid}",
        f"--model.tokenizer_name={tok_dir}",
        "--data.max_train_documents=0",
        "--data.seq_len=32",
        "--train.micro_batch_size=4",
        "--train.max_steps=10",
        "--train.save_steps=5",
    )
    straight, resumed = train_straight_and_resumed(tmp_path, *args, stop_after=5)
    saved = json.loads((tmp_path / "resumed" / "checkpoint-5" / "trainer_state.json").read_text())
    assert saved["data_state"]["ranks"][0]["stream"] is not None
    for name, value in parameters(straight).items():
        assert torch.equal(value, parameters(resumed)[name]), name


def test_streaming_bad_inputs_fail_with_one_error_line(tmp_path, cache_dir, corpus, capsys):
    from accelerate.state import AcceleratorState, GradientState

    from pretrain.objectives.causal import CausalLM
    from pretrain.runner import main

    train, valid, tok_dir, _ = corpus
    cases = {
        "no validation": ([f"--model.tokenizer_name={tok_dir}"], "validation_file"),
        "no tokenizer": ([f"--data.validation_file={valid}"], "tokenizer_name"),
    }
    for label, (argv, expected) in cases.items():
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
        out = tmp_path / label.replace(" ", "-")
        stream_args = ["--data.streaming=true", f"--data.train_file={train}", f"--train.output_dir={out}"]
        assert main(CausalLM, [*TINY, *stream_args, *argv], REPO / "recipes" / "causal" / "config.yaml") == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and expected in err[0], (label, err)
