"""Untrusted files: a crafted or damaged .plmz header, a model folder without a tokenizer, and a
resume whose config differs from its checkpoint's."""

from __future__ import annotations

import zlib

import datasets
import pytest
import yaml
from conftest import TINY
from transformers import GPT2Config, GPT2LMHeadModel

from pretrain.config import ConfigError, parse_config, save_config
from pretrain.data.tokenizer import train_bpe_tokenizer
from pretrain.eval.cli import main as eval_main
from pretrain.eval.compress_cli import decompress_main
from pretrain.eval.compression import decompress_bytes, model_fingerprint
from pretrain.eval.plmz import CompressedFileError, Header, check_header
from pretrain.objectives.causal import CausalLM
from pretrain.runner import main as train_main
from pretrain.settings import make_run_config
from pretrain.train.resume_config import compare_resume_config


@pytest.fixture(scope="module")
def weights_only(tmp_path_factory):
    """A tiny causal model folder with weights and config but no tokenizer files."""
    path = tmp_path_factory.mktemp("weights") / "model"
    GPT2LMHeadModel(
        GPT2Config(vocab_size=300, n_positions=64, n_embd=32, n_layer=1, n_head=2)
    ).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def model_dir(weights_only, tmp_path_factory):
    path = tmp_path_factory.mktemp("full") / "model"
    path.mkdir()
    for f in weights_only.iterdir():
        (path / f.name).write_bytes(f.read_bytes())
    texts = datasets.Dataset.from_dict({"text": [f"sample text number {i} " * 5 for i in range(100)]})
    train_bpe_tokenizer(texts, vocab_size=300).save_pretrained(path)
    return path


def header(**changes) -> Header:
    fields = dict(fingerprint=b"\0" * 8, crc32=0, num_bytes=100, num_tokens=50, streams=1, window=64,
                  stride=32, threads=1)  # fmt: skip
    return Header(**{**fields, **changes})


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"num_tokens": 2**40, "num_bytes": 2**41}, "more than 8 bytes of coded data can hold"),
        ({"streams": 0}, "0 streams"),
        ({"streams": 60000}, "60000 streams"),
        ({"window": 1 << 30}, "but the model has 64 positions"),
        ({"stride": 64}, "stride 64"),
        ({"threads": 0}, "0 threads"),
        ({"num_tokens": 500}, "500 tokens for 100 bytes"),
        ({"num_bytes": 10**9}, "bytes from only 50 tokens"),
    ],
)
def test_every_header_field_is_checked_against_size_and_model(changes, message):
    with pytest.raises(CompressedFileError, match=message):
        check_header(header(**changes), payload_bytes=8, vocab_size=300, positions=64)
    check_header(header(), payload_bytes=8, vocab_size=300, positions=64)  # the sane one passes


def test_a_damaged_payload_is_called_damaged_before_any_model_is_loaded(tmp_path):
    payload = b"\x01\x02\x03\x04" * 4
    blob = header(payload_crc32=zlib.crc32(payload)).to_bytes() + payload
    flipped = bytearray(blob)
    flipped[-3] ^= 0x40
    for damaged in (bytes(flipped), blob[:-2], blob[:20]):
        with pytest.raises(CompressedFileError, match="damaged"):
            decompress_bytes(damaged, tmp_path / "no-model-needed")


def test_decompress_refuses_a_crafted_header_without_allocating(model_dir, tmp_path, capsys):
    payload = b"\0" * 8
    crafted = header(
        fingerprint=model_fingerprint(model_dir)[0], num_tokens=2**50, num_bytes=2**51,
        payload_crc32=zlib.crc32(payload),
    )  # fmt: skip
    (tmp_path / "crafted.plmz").write_bytes(crafted.to_bytes() + payload)
    code = decompress_main(
        ["--model", str(model_dir), str(tmp_path / "crafted.plmz"), str(tmp_path / "o.txt")]
    )
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert (
        code == 1 and len(errors) == 1 and "header is damaged" in errors[0] and "torch build" not in errors[0]
    )
    assert not (tmp_path / "o.txt").exists()


def test_eval_of_a_folder_without_tokenizer_is_one_line(weights_only, capsys):
    assert eval_main(["--model", str(weights_only)]) == 1
    err = capsys.readouterr().err
    assert err.count("error: ") == 1 and f"{weights_only} holds no tokenizer" in err, err


def cfg(*argv):
    return parse_config(make_run_config(CausalLM.Config), [*TINY, *argv])


def test_resume_refuses_immutable_changes_listing_them_and_applies_mutable_ones(tmp_path):
    save_config(cfg("--train.max_steps=4"), tmp_path / "resolved_config.yaml")
    changed = cfg("--train.max_steps=4", "--train.learning_rate=0.5", "--train.micro_batch_size=4")
    with pytest.raises(ConfigError) as err:
        compare_resume_config(tmp_path, changed)
    assert "train.learning_rate: 0.003 -> 0.5" in str(err.value) and "train.micro_batch_size: 8 -> 4" in str(
        err.value
    )
    with pytest.raises(ConfigError, match="model.num_layers"):
        compare_resume_config(tmp_path, cfg("--train.max_steps=4", "--model.num_layers=3"))
    applied = compare_resume_config(tmp_path, cfg("--train.max_steps=9", "--train.eval_steps=2"))
    assert applied == ["train.max_steps: 4 -> 9", "train.eval_steps: 0 -> 2"]


def test_a_refused_resume_keeps_the_runs_resolved_config(tmp_path, cache_dir, capsys):
    from accelerate.state import AcceleratorState, GradientState

    def run(*argv):
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
        return train_main(
            CausalLM, [*TINY, "--data.max_train_documents=60", f"--train.output_dir={out}", *argv]
        )

    out = tmp_path / "run"
    assert run("--train.max_steps=2", "--train.save_steps=1") == 0
    resolved = (out / "resolved_config.yaml").read_bytes()
    capsys.readouterr()
    assert (
        run("--train.max_steps=3", "--train.resume_from_checkpoint=latest", "--train.learning_rate=0.01") == 1
    )
    err = capsys.readouterr().err
    assert "train.learning_rate: 0.003 -> 0.01" in err and "Traceback" not in err
    assert (out / "resolved_config.yaml").read_bytes() == resolved
    assert run("--train.max_steps=3", "--train.resume_from_checkpoint=latest") == 0
    assert "resume: applying train.max_steps: 2 -> 3" in capsys.readouterr().out
    assert yaml.safe_load((out / "resolved_config.yaml").read_text())["train"]["max_steps"] == 3
