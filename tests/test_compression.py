"""LM compression: exact round trips, code length at the model's cross-entropy, the CLI and its errors."""

from __future__ import annotations

import math
from pathlib import Path

import datasets
import pytest
import torch
from conftest import run_recipe

from pretrain.eval.compress_cli import compress_main, decompress_main
from pretrain.eval.compression import (
    PRECISION_BITS,
    CompressedFileError,
    compress_bytes,
    compute_frequencies,
    decompress_bytes,
    encode_text,
    load_causal_lm,
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """A tiny causal model (64 positions) trained for a few steps on the embedded corpus."""
    out = tmp_path_factory.mktemp("compress") / "lm"
    run_recipe("causal", out, "--train.max_steps=30")
    return out


@pytest.fixture(scope="module")
def heldout_text(model_dir: Path) -> str:
    """About 8 KB of validation documents the model never trained on."""
    from pretrain.data.text import load_raw_datasets
    from pretrain.settings import DataConfig

    _, valid = load_raw_datasets(DataConfig())
    return "\n\n".join(valid["text"])[:8000]


TEXTS = {
    "empty": "",
    "one_char": "a",
    "non_ascii": "Grüße, naïve café — 日本語のテキスト, emoji 😀👍🏽, Ελληνικά, עברית\n",
    "control_and_specials": "tab\there\r\nCRLF\x00NUL </s><s><pad><mask> literal special-token strings\n\n\n",
}


@pytest.mark.parametrize("name", sorted(TEXTS))
def test_round_trip_returns_identical_bytes(model_dir, name):
    data = TEXTS[name].encode("utf-8")
    blob, report = compress_bytes(data, model_dir)
    assert decompress_bytes(blob, model_dir) == data
    assert report.compressed_bytes == len(blob) and report.original_bytes == len(data)


def test_long_text_round_trips_through_sliding_windows_and_parallel_streams(model_dir, heldout_text):
    # A 64-position model: one stream of ~800 tokens re-encodes its context ~20 times; three streams
    # of unequal length over ~2.5k tokens exercise the lockstep with a finished stream.
    for text, streams in ((heldout_text[:2500], 1), (heldout_text, 3)):
        data = text.encode("utf-8")
        blob, report = compress_bytes(data, model_dir, streams=streams)
        assert report.num_tokens > 10 * 64 * streams
        assert decompress_bytes(blob, model_dir) == data


def test_achieved_bits_within_one_percent_of_cross_entropy(model_dir, heldout_text):
    data = heldout_text.encode("utf-8")
    blob, report = compress_bytes(data, model_dir)
    # Constant overhead: the header, plus the range coder's final flush (at most two 32-bit words).
    payload_bits = 8 * (len(blob) - report.header_bytes) - 64
    assert payload_bits <= 1.01 * report.cross_entropy_bits
    assert 8 * len(blob) >= 0.99 * report.cross_entropy_bits  # no coder beats the model's own code length
    assert report.bits_per_byte < 8  # a model trained 30 steps already beats storing the bytes


def test_cross_entropy_matches_a_hand_computation(model_dir):
    """One stream, shorter than the window: the reported code length is -log2 p of one causal pass."""
    text = "The return statement leaves the current function call with an expression list."
    model, tokenizer = load_causal_lm(model_dir)
    ids = encode_text(tokenizer, text)
    assert len(ids) < model.config.n_positions
    with torch.no_grad():
        logits = model(torch.tensor([[tokenizer.eos_token_id, *ids]])).logits[0, :-1].double()
    nats = -torch.log_softmax(logits, -1).gather(1, torch.tensor(ids)[:, None]).sum().item()
    _, report = compress_bytes(text.encode(), model_dir)
    assert math.isclose(report.cross_entropy_bits, nats / math.log(2), rel_tol=1e-5)


def test_decoder_uses_the_encoders_thread_count_and_restores_its_own(model_dir):
    data = b"Threads: the decoder repeats the encoder's computation with its thread count."
    before = torch.get_num_threads()
    blob, _ = compress_bytes(data, model_dir, threads=2)
    torch.set_num_threads(1)
    try:
        assert decompress_bytes(blob, model_dir) == data
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_special_token_strings_are_tokenized_as_in_training(model_dir):
    """wikitext's literal "<unk>" must be the <unk> token the model trained on, not five characters."""
    from pretrain.data.packing import tokenize_dataset

    _, tokenizer = load_causal_lm(model_dir)
    text = "The <unk> river , near <unk> @-@ town </s> ends"
    ids = encode_text(tokenizer, text)
    assert ids.count(tokenizer.unk_token_id) == 2
    trained = tokenize_dataset(datasets.Dataset.from_dict({"text": [text]}), tokenizer, append_eos=False)
    assert ids == trained[0]["input_ids"]
    assert decompress_bytes(compress_bytes(text.encode(), model_dir)[0], model_dir) == text.encode()


def test_plain_special_tokens_are_coded_as_text_and_read_from_the_run(model_dir, tmp_path):
    from pretrain.eval.compression import trained_special_tokens_in_text

    _, tokenizer = load_causal_lm(model_dir)
    text = "The <unk> river </s> ends"
    ids = encode_text(tokenizer, text, "plain")
    assert not set(ids) & set(tokenizer.all_special_ids)
    assert tokenizer.decode(ids) == text
    assert trained_special_tokens_in_text(model_dir) == "parse"  # the recipe's default, as recorded
    (tmp_path / "resolved_config.yaml").write_text("data:\n  special_tokens_in_text: plain\n")
    assert trained_special_tokens_in_text(tmp_path) == "plain"
    assert trained_special_tokens_in_text(tmp_path / "missing") == "parse"


def test_frequencies_are_exact_integers_with_a_floor_of_one():
    logits = torch.randn(5, 2048, generator=torch.Generator().manual_seed(0)) * 8
    logits[0, 3] = 80.0  # one token takes almost all of the mass
    freqs = compute_frequencies(logits)
    assert (freqs.sum(-1) == 2**PRECISION_BITS).all()
    assert freqs.min() >= 1 and (freqs == freqs.round()).all()
    assert freqs[0, 3] > 2**PRECISION_BITS - 2048
    assert (compute_frequencies(logits.clone()) == freqs).all()


def test_a_damaged_file_is_refused_not_decoded_to_garbage(model_dir, heldout_text):
    blob, report = compress_bytes(heldout_text[:600].encode(), model_dir)
    flipped = bytearray(blob)
    flipped[report.header_bytes + 10] ^= 0xFF
    invalid = blob[: report.header_bytes] + b"\xff" * (len(blob) - report.header_bytes)
    for damaged in (bytes(flipped), invalid, blob[: report.header_bytes + 8]):
        with pytest.raises(CompressedFileError, match="is damaged"):
            decompress_bytes(damaged, model_dir)


def test_cli_prints_the_table_and_refuses_bad_input(model_dir, tmp_path, capsys):
    source, packed, restored = tmp_path / "in.txt", tmp_path / "in.plmz", tmp_path / "out.txt"
    source.write_text("Lists are mutable sequences, typically used to store collections of items.\n")
    assert compress_main(["--model", str(model_dir), str(source), str(packed)]) == 0
    table = capsys.readouterr().out
    for row in (
        "range coded (achieved)",
        "cross-entropy",
        "gzip",
        "bz2",
        "xz",
        "zstd",
        "incl. the model files",
    ):
        assert row in table
    assert decompress_main(["--model", str(model_dir), str(packed), str(restored)]) == 0
    assert restored.read_bytes() == source.read_bytes()

    other = tmp_path / "other-model"
    other.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (other / name).write_bytes((model_dir / name).read_bytes())
    binary = tmp_path / "binary.bin"
    binary.write_bytes(b"\xff\xfe\x00")
    cases = [
        (compress_main, [str(source), str(packed)], "already exists"),  # no --force
        (compress_main, [str(binary), str(tmp_path / "b.plmz")], "not UTF-8"),
        (compress_main, [str(tmp_path / "missing.txt"), str(tmp_path / "m.plmz")], "is not a file"),
        (compress_main, [str(source), str(tmp_path / "no-such-dir" / "m.plmz")], "does not exist; create it"),
        (decompress_main, [str(packed), str(tmp_path / "no-such-dir" / "x.txt")], "does not exist; create it"),
        (decompress_main, [str(source), str(tmp_path / "x.txt")], "no PLMZ header"),
        (decompress_main, [str(packed), str(restored)], "already exists"),
    ]
    for main, args, message in cases:
        assert main(["--model", str(model_dir), *args]) == 1
        assert message in capsys.readouterr().err
    assert decompress_main(["--model", str(other), str(packed), str(tmp_path / "y.txt")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "different model" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "binary.bin",
        "in.plmz",
        "in.txt",
        "other-model",
        "out.txt",
    ]
