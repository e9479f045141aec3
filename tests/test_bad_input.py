"""Every bad input ends in one clear `error:` line and exit code 1, never a traceback or lost work."""

from __future__ import annotations

import json

import datasets
import pytest
import torch
from conftest import TINY
from transformers import GPT2Config, GPT2LMHeadModel

from pretrain.data.tokenizer import train_bpe_tokenizer
from pretrain.objectives.causal import CausalLM
from pretrain.runner import main


def run(tmp_path, *argv) -> tuple[int, str]:
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    args = [*TINY, "--data.max_train_documents=60", "--train.max_steps=2", *argv]
    if not any(a.startswith("--train.output_dir") for a in argv):
        args.append(f"--train.output_dir={tmp_path / 'out'}")
    return main(CausalLM, args), ""


def write(path, data: bytes | str):
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


CASES = {
    "missing data file": (lambda p: [f"--data.train_file={p / 'nope.txt'}"], "does not exist"),
    "empty data file": (
        lambda p: ["--data.train_file=" + str(write(p / "empty.txt", "  \n\n"))],
        "holds no non-empty text",
    ),
    "binary data file": (
        lambda p: [f"--data.train_file={write(p / 'bin.txt', bytes(range(256)) * 4)}"],
        "looks binary",
    ),
    "invalid UTF-8": (
        lambda p: [f"--data.train_file={write(p / 'latin.txt', b'caf' + bytes([0xE9]) * 3)}"],
        "not valid UTF-8",
    ),
    "unsupported file type": (
        lambda p: [f"--data.train_file={write(p / 'x.xlsx', 'x')}"],
        "unsupported file type",
    ),
    "jsonl without text column": (
        lambda p: [
            "--data.train_file=" + str(write(p / "d.jsonl", json.dumps({"body": "hello there"}) + "\n"))
        ],
        "has no column 'text'",
    ),
    "too little text for one block": (
        lambda p: [
            f"--data.{split}_file={write(p / f'tiny-{split}.txt', 'hi there')}"
            for split in ("train", "validation")
        ],
        "fewer than one block",
    ),
    "empty validation split": (
        lambda p: [f"--data.train_file={write(p / 'one.txt', 'just one document')}"],
        "validation set is empty",
    ),
    "unknown key": (lambda p: ["--train.learning_rat=1"], "unknown config key(s) ['train.learning_rat']"),
    "wrong type": (lambda p: ["--train.micro_batch_size=big"], "train.micro_batch_size expects an integer"),
    "unknown preset": (lambda p: ["--model.preset=huge"], "model.preset='huge' is unknown"),
    "heads do not divide width": (lambda p: ["--model.num_heads=3"], "not divisible by model.num_heads=3"),
    "seq_len beyond positions": (
        lambda p: ["--model.max_position_embeddings=32"],
        "the model has 32 positions",
    ),
    "batch larger than the data": (
        lambda p: ["--train.micro_batch_size=100000"],
        "fewer than one global micro-batch",
    ),
    "unloadable tokenizer": (
        lambda p: [f"--model.tokenizer_name={p / 'no-tokenizer'}"],
        "could not load tokenizer",
    ),
    "Hub dataset offline": (lambda p: ["--data.dataset_name=surely/not-here"], "could not load Hub dataset"),
    "output_dir not writable": (
        lambda p: [f"--train.output_dir={write(p / 'afile', 'x') / 'out'}"],
        "is not writable",
    ),
    "resume without checkpoint": (lambda p: ["--train.resume_from_checkpoint=latest"], "has no checkpoint"),
    "resume from missing path": (
        lambda p: [f"--train.resume_from_checkpoint={p / 'checkpoint-9'}"],
        "does not exist",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gives_one_clear_line(case, tmp_path, cache_dir, capsys):
    make_args, message = CASES[case]
    code, _ = run(tmp_path, *make_args(tmp_path))
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 1
    assert len(errors) == 1 and message in errors[0], err[-2000:]
    assert "Traceback" not in err


def test_tokenizer_model_vocab_mismatch(tmp_path, cache_dir, capsys):
    model_dir, tok_dir = tmp_path / "model", tmp_path / "tok"
    GPT2LMHeadModel(
        GPT2Config(vocab_size=300, n_positions=64, n_embd=32, n_layer=1, n_head=2)
    ).save_pretrained(model_dir)
    texts = datasets.Dataset.from_dict({"text": [f"sample text number {i} " * 5 for i in range(200)]})
    train_bpe_tokenizer(texts, vocab_size=600).save_pretrained(tok_dir)
    code, _ = run(tmp_path, f"--model.model_name_or_path={model_dir}", f"--model.tokenizer_name={tok_dir}")
    assert code == 1
    assert "the model's embedding has 300 rows" in capsys.readouterr().err


def test_finished_run_is_not_overwritten(tmp_path, cache_dir, capsys):
    out = tmp_path / "done"
    assert run(tmp_path, f"--train.output_dir={out}")[0] == 0
    weights = (out / "model.safetensors").read_bytes()
    code, _ = run(tmp_path, f"--train.output_dir={out}")
    assert code == 1 and "already holds a finished model" in capsys.readouterr().err
    assert (out / "model.safetensors").read_bytes() == weights


def test_corrupt_checkpoint_fails_cleanly_and_keeps_the_good_one(tmp_path, cache_dir, capsys):
    out = tmp_path / "ckpt"
    assert run(tmp_path, f"--train.output_dir={out}", "--train.save_steps=1")[0] == 0
    good = out / "checkpoint-2"
    snapshot = {p.name: p.read_bytes() for p in good.iterdir() if p.is_file()}
    bad = out / "checkpoint-1"
    bad.mkdir(exist_ok=True)
    (bad / "trainer_state.json").write_text(json.dumps({"step": 1}))
    for weights in bad.glob("*.safetensors"):
        weights.write_bytes(b"garbage")
    torch.save({}, bad / "optimizer.bin")
    code, _ = run(
        tmp_path, f"--train.output_dir={out}", f"--train.resume_from_checkpoint={bad}", "--train.max_steps=3"
    )
    err = capsys.readouterr().err
    assert code == 1 and "is corrupt or does not match this model" in err, err[-1500:]
    assert {p.name: p.read_bytes() for p in good.iterdir() if p.is_file()} == snapshot


def test_refuses_a_multi_process_launch_that_started_one_process(tmp_path, cache_dir):
    """`accelerate launch --cpu --num_processes 2` silently starts one process: we refuse it."""
    import os
    import subprocess
    import sys

    from conftest import REPO

    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    cmd = [
        accelerate,
        "launch",
        "--cpu",
        "--num_processes",
        "2",
        str(REPO / "recipes/causal/train.py"),
        *TINY,
    ]
    proc = subprocess.run(
        [*cmd, f"--train.output_dir={tmp_path}"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode != 0
    assert "error: several processes were requested but this is a single-process run" in proc.stderr
    assert "ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu" in proc.stderr
