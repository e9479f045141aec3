"""Inputs that used to end in a traceback: each is one `error:` line, exit 1 and nothing half-written."""

from __future__ import annotations

import errno
import json

import datasets
import pytest
from accelerate import Accelerator
from conftest import TINY
from transformers import BertConfig, BertForMaskedLM

from pretrain.config import ConfigError
from pretrain.data.text import DataError, _read_text_documents
from pretrain.data.tokenizer import train_bpe_tokenizer
from pretrain.eval.compress_cli import compress_main
from pretrain.objectives.causal import CausalLM
from pretrain.prepare.cli import main as data_main
from pretrain.runner import main as train_main
from pretrain.train.checkpoint import LATEST_FILE, TrainerState, save_checkpoint


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    return lines[0]


def train(tmp_path, *argv) -> int:
    return train_main(CausalLM, [*TINY, f"--train.output_dir={tmp_path / 'out'}", *argv])


def test_unknown_tracker_is_refused_at_parse_time(tmp_path, capsys):
    assert train(tmp_path, "--train.report_to=tensorbored") == 1
    assert "train.report_to='tensorbored' is not one of ['tensorboard', 'wandb'" in one_error_line(capsys)


def test_a_text_column_of_numbers_is_one_line(tmp_path, capsys):
    data = tmp_path / "numbers.jsonl"
    data.write_text("".join(json.dumps({"text": i}) + "\n" for i in range(50)))
    assert train(tmp_path, f"--data.train_file={data}") == 1
    assert "column 'text' holds int64, not text" in one_error_line(capsys)


def test_an_unreadable_text_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="cannot be read"):
        _read_text_documents(tmp_path)  # reading a directory fails like a file without permission


def test_disk_full_while_saving_keeps_latest_and_removes_the_partial_checkpoint(tmp_path):
    accelerator = Accelerator()
    save_checkpoint(accelerator, tmp_path, TrainerState(step=1), "run: 1\n")
    good = {p.name: p.read_bytes() for p in (tmp_path / "checkpoint-1").iterdir()}

    def full_disk(path: str) -> None:
        (tmp_path / ".tmp-checkpoint-2").mkdir(exist_ok=True)
        (tmp_path / ".tmp-checkpoint-2" / "model.safetensors").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    accelerator.save_state = full_disk
    with pytest.raises(ConfigError, match="the disk is full.*latest still names checkpoint-1"):
        save_checkpoint(accelerator, tmp_path, TrainerState(step=2), "run: 2\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-1", LATEST_FILE]
    assert (tmp_path / LATEST_FILE).read_text() == "checkpoint-1"
    assert {p.name: p.read_bytes() for p in (tmp_path / "checkpoint-1").iterdir()} == good


def test_compress_with_a_masked_model_is_one_line(tmp_path, capsys):
    model = tmp_path / "bert"
    BertForMaskedLM(BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64)).save_pretrained(model)  # fmt: skip
    texts = datasets.Dataset.from_dict({"text": [f"sample text number {i} " * 5 for i in range(100)]})
    train_bpe_tokenizer(texts, vocab_size=300).save_pretrained(model)
    (tmp_path / "in.txt").write_text("some text")
    assert compress_main(["--model", str(model), str(tmp_path / "in.txt"), str(tmp_path / "out.plmz")]) == 1
    assert "is a masked model" in one_error_line(capsys)
    assert not (tmp_path / "out.plmz").exists()


@pytest.mark.parametrize("executor, content", [("datasets", ""), ("datasets", "\n\n  \n"), ("local", "")])
def test_prepare_of_an_empty_input_is_one_line(executor, content, tmp_path, capsys):
    (tmp_path / "empty.txt").write_text(content)
    out = tmp_path / "clean"
    argv = [
        "prepare",
        "--input",
        str(tmp_path / "empty.txt"),
        "--output",
        str(out),
        f"--executor.name={executor}",
    ]
    assert data_main(argv) == 2
    assert "hold no documents" in one_error_line(capsys)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "work" in p.name]


def test_help_lists_every_key_with_type_default_and_doc(capsys):
    from pretrain.config import valid_keys
    from pretrain.eval.cli import main as eval_main
    from pretrain.runner import cli_main
    from pretrain.settings import make_run_config

    assert cli_main(["--help"]) == 0
    assert "objectives: causal, contrastive, t5, prefix_lm, permutation, masked" in capsys.readouterr().out
    assert cli_main(["masked", "--help"]) == 0
    out = capsys.readouterr().out
    for key in valid_keys(make_run_config(get_masked().Config)):
        assert f"  --{key}  (" in out, key
    assert "--objective.mlm_probability  (float, default 0.15)\n      Fraction of non-special tokens" in out
    assert "--train.max_steps  (int, default" in out and "Range [1, inf)" in out
    assert eval_main(["--help"]) == 0
    assert "--data.validation_file  (str, default '')" in capsys.readouterr().out


def get_masked():
    from pretrain.objectives import get_objective

    return get_objective("masked")
