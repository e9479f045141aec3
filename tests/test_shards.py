"""Megatron-format shards: tokenize -> read back, the byte layout from its specification, datatrove's
shards, resumable/atomic writes, the O(1)-memory block order, and every bad-input case."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pretrain.data.fast_encode import batch_encoder
from pretrain.data.loader import BlockPermutation
from pretrain.data.shard_set import ShardBlocks, load_shard_set
from pretrain.data.shards import IndexedShard, write_shard
from pretrain.data.text import DataError, embedded_documents
from pretrain.data.tokenizer import load_tokenizer
from pretrain.prepare.tokenize import tokenize_to_shards
from pretrain.prepare.tokenize_cli import train_tokenizer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """(jsonl of 400 real documents, a 1024-token BPE trained on them, the documents)."""
    root = tmp_path_factory.mktemp("shards")
    docs = embedded_documents()[:400]
    data = root / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    train_tokenizer([str(data)], str(root / "tok"), 1024, sample_bytes=400_000)
    return data, root / "tok", docs


def tokenize(corpus, out: Path, **kwargs) -> dict:
    data, tok, _ = corpus
    return tokenize_to_shards([str(data)], out, str(tok), progress=False, **kwargs)


def test_tokenize_reads_back_fast_encode_ids_plus_eos(corpus, tmp_path):
    meta = tokenize(corpus, tmp_path / "s", shard_tokens=20_000)
    tokenizer = load_tokenizer(str(corpus[1]))
    expected = batch_encoder(tokenizer)(corpus[2])
    shards = load_shard_set(tmp_path / "s")
    assert len(shards.shards) == len(meta["shards"]) > 3 and meta["dtype"] == "uint16"
    got = [shard.sequence(i) for shard in shards.shards for i in range(shard.num_sequences)]
    assert len(got) == len(expected) == meta["documents"]
    for ids, want in zip(got, expected, strict=True):
        assert ids.dtype == np.uint16 and ids[-1] == tokenizer.eos_token_id
        np.testing.assert_array_equal(ids[:-1], want)
    # every shard but the last closes on the first document reaching the target
    assert all(s["tokens"] >= 20_000 for s in meta["shards"][:-1])
    assert meta["tokens"] == sum(len(x) for x in got) == len(shards)


def test_blocks_are_slices_of_the_concatenated_stream_across_shards(corpus, tmp_path):
    tokenize(corpus, tmp_path / "s", shard_tokens=5_000)
    shards = load_shard_set(tmp_path / "s")
    stream = np.concatenate([s.tokens for s in shards.shards])
    blocks = ShardBlocks(shards, 97)
    assert len(blocks) == len(stream) // 97
    for i in range(len(blocks)):
        np.testing.assert_array_equal(blocks[i]["input_ids"].numpy(), stream[i * 97 : (i + 1) * 97])
    head, tail = shards.split_at_document(0.1)
    assert len(head) + len(tail) == len(stream) and 0.05 < len(tail) / len(stream) < 0.15
    assert stream[len(head) - 1] == load_tokenizer(str(corpus[1])).eos_token_id  # cut after an EOS


def test_a_pair_written_from_the_megatron_specification_reads_back(tmp_path):
    docs = [
        np.array([5, 70000, 3], dtype=np.int32),
        np.array([], dtype=np.int32),
        np.array([1, 2], dtype=np.int32),
    ]
    lengths = [3, 0, 2]
    pointers = [0, 12, 12]
    (tmp_path / "spec.bin").write_bytes(b"".join(d.tobytes() for d in docs))
    idx = b"MMIDIDX\x00\x00" + struct.pack("<Q", 1) + struct.pack("<B", 4) + struct.pack("<Q", 3)
    idx += struct.pack("<Q", 4) + struct.pack("<3i", *lengths) + struct.pack("<3q", *pointers)
    idx += struct.pack("<4q", 0, 1, 2, 3)
    (tmp_path / "spec.idx").write_bytes(idx)
    shard = IndexedShard(tmp_path / "spec")
    assert shard.dtype == np.int32 and shard.num_sequences == 3
    for i, d in enumerate(docs):
        np.testing.assert_array_equal(shard.sequence(i), d)
    np.testing.assert_array_equal(shard.document_index, [0, 1, 2, 3])
    # and ours writes exactly those bytes
    write_shard(tmp_path / "ours", docs, np.int32)
    assert (tmp_path / "ours.idx").read_bytes() == idx
    assert (tmp_path / "ours.bin").read_bytes() == (tmp_path / "spec.bin").read_bytes()


def test_datatrove_megatron_shards_read_back_identically(corpus, tmp_path):
    pytest.importorskip("datatrove")
    from datatrove.data import Document
    from datatrove.pipeline.tokens.megatron_tokenizer import MegatronDocumentTokenizer

    _, tok, docs = corpus
    step = MegatronDocumentTokenizer(
        str(tmp_path / "dt"), tokenizer_name_or_path=str(tok / "tokenizer.json"), eos_token="</s>"
    )
    step.run(iter(Document(text=d, id=str(i)) for i, d in enumerate(docs)))
    shards = load_shard_set(tmp_path / "dt")
    assert shards.meta is None and shards.tokenizer_dir is None
    tokenizer = load_tokenizer(str(tok))
    expected = batch_encoder(tokenizer)(docs)
    (shard,) = shards.shards
    assert shard.num_sequences == len(docs)
    for i, want in enumerate(expected):
        np.testing.assert_array_equal(shard.sequence(i), np.append(want, tokenizer.eos_token_id))
    shards.check_tokenizer(tokenizer, "parse")  # scans the ids: all below the vocabulary


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def test_an_interrupted_tokenize_rerun_gives_byte_identical_shards(corpus, tmp_path):
    tokenize(corpus, tmp_path / "whole", shard_tokens=10_000)

    def kill_after_two(info):
        if info.name == "shard-00001":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tokenize(corpus, tmp_path / "cut", shard_tokens=10_000, on_shard=kill_after_two)
    cut = tmp_path / "cut"
    assert not (cut / "meta.json").exists() and (cut / "shard-00001.idx").exists()
    # what a SIGKILL in the middle of the third shard leaves: a temporary and an unpublished .bin
    (cut / ".shard-00002.bin.tmp999").write_bytes(b"partial")
    (cut / "shard-00002.bin").write_bytes(b"half")
    tokenize(corpus, cut, shard_tokens=10_000)
    assert _files(cut) == _files(tmp_path / "whole")
    again = tokenize(corpus, cut, shard_tokens=10_000)  # a finished run is a no-op
    assert again == json.loads((cut / "meta.json").read_text()) and _files(cut) == _files(tmp_path / "whole")


def test_the_block_order_is_a_seeded_bijection_in_constant_memory():
    for n in (1, 2, 3, 10, 1000, 4097):
        perm = BlockPermutation(n, seed=7, epoch=0)(np.arange(n))
        assert sorted(perm.tolist()) == list(range(n))
    a = BlockPermutation(10_000, 7, 0)(np.arange(10_000))
    np.testing.assert_array_equal(a, BlockPermutation(10_000, 7, 0)(np.arange(10_000)))
    assert (a != BlockPermutation(10_000, 7, 1)(np.arange(10_000))).mean() > 0.99
    assert abs(np.corrcoef(np.arange(10_000), a)[0, 1]) < 0.05  # no visible order left
    huge = BlockPermutation(4 * 10**12, 7, 0)(np.arange(5, 13))  # 4 T blocks: no table is built
    assert len(set(huge.tolist())) == 8 and huge.max() < 4 * 10**12


# --- bad inputs: one DataError naming the problem -----------------------------------------------


@pytest.fixture()
def shard_dir(corpus, tmp_path) -> Path:
    tokenize(corpus, tmp_path / "s", shard_tokens=20_000)
    return tmp_path / "s"


def test_a_truncated_bin_is_refused(shard_dir):
    bin_path = shard_dir / "shard-00000.bin"
    bin_path.write_bytes(bin_path.read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated"):
        load_shard_set(shard_dir)


def test_an_idx_of_another_bin_is_refused(shard_dir):
    shutil.copy(shard_dir / "shard-00001.idx", shard_dir / "shard-00000.idx")
    with pytest.raises(DataError, match="another .bin|truncated"):
        load_shard_set(shard_dir)


def test_a_truncated_idx_is_refused(shard_dir):
    idx = shard_dir / "shard-00000.idx"
    idx.write_bytes(idx.read_bytes()[:-8])
    with pytest.raises(DataError, match="index is truncated"):
        load_shard_set(shard_dir)


def test_bad_magic_is_refused(shard_dir):
    idx = shard_dir / "shard-00000.idx"
    idx.write_bytes(b"NOTMAGIC!" + idx.read_bytes()[9:])
    with pytest.raises(DataError, match="not a Megatron index"):
        load_shard_set(shard_dir)


def test_ids_beyond_the_vocabulary_are_refused(corpus, tmp_path):
    write_shard(tmp_path / "big", [np.array([1, 2, 5000], dtype=np.int32)], np.int32)
    with pytest.raises(DataError, match="token id 5000, not below the tokenizer's vocabulary of 1024"):
        load_shard_set(tmp_path / "big.bin").check_tokenizer(load_tokenizer(str(corpus[1])), "parse")


def test_shards_of_another_tokenizer_are_refused(corpus, shard_dir, tmp_path):
    other = tmp_path / "other-tok"
    train_tokenizer([str(corpus[0])], str(other), 600, sample_bytes=100_000)
    with pytest.raises(DataError, match="fingerprint"):
        load_shard_set(shard_dir).check_tokenizer(load_tokenizer(str(other)), "parse")
    with pytest.raises(DataError, match="special_tokens_in_text=plain"):
        load_shard_set(shard_dir).check_tokenizer(load_tokenizer(str(corpus[1])), "plain")


def test_an_empty_shard_set_and_a_missing_path_are_refused(tmp_path):
    write_shard(tmp_path / "empty", [], np.uint16)
    with pytest.raises(DataError, match="holds no tokens"):
        load_shard_set(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        load_shard_set(tmp_path / "nowhere")


def test_the_cli_refuses_a_foreign_output_dir_in_one_error_line(corpus, tmp_path):
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("keep me")
    cmd = [sys.executable, "-m", "pretrain.cli", "data", "tokenize", "--input", str(corpus[0])]
    cmd += ["--output", str(tmp_path / "theirs"), "--tokenizer", str(corpus[1])]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "not a tokenize output" in errors[0]
    assert sorted(p.name for p in (tmp_path / "theirs").iterdir()) == ["notes.txt"]
    bad = subprocess.run([*cmd[:-4], "--output", str(tmp_path / "x"), "--tokenizer", str(corpus[1]),
                          "--shard-tokens", "0"], capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error:") and "must be >= 1" in bad.stderr
    assert not (tmp_path / "x").exists()


def test_an_empty_input_writes_nothing(corpus, tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError, match="could not read inputs|hold no documents"):
        tokenize_to_shards([str(tmp_path / "empty.jsonl")], tmp_path / "out", str(corpus[1]), progress=False)
    assert not (tmp_path / "out").exists()
