"""Tokenization + packing: no token lost but the final partial block, EOS between documents."""

from __future__ import annotations

import datasets
import numpy as np
import torch

from pretrain.data.packing import (
    block_attention_mask,
    document_positions,
    pack_blocks,
    token_stream,
    tokenize_dataset,
)
from pretrain.data.tokenizer import train_bpe_tokenizer

DOCS = [f"Document number {i} says {'hello ' * (i % 7 + 1)}and ends." for i in range(300)]


def _tokenizer():
    return train_bpe_tokenizer(datasets.Dataset.from_dict({"text": DOCS}), vocab_size=512)


def test_packing_keeps_every_token_with_eos_between_documents():
    tokenizer = _tokenizer()
    tokenized = tokenize_dataset(datasets.Dataset.from_dict({"text": DOCS}), tokenizer)
    stream = token_stream(tokenized)
    expected = []
    for doc in DOCS:
        expected += tokenizer(doc, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert stream.tolist() == expected  # concatenation in order, one EOS after every document
    assert int((stream == tokenizer.eos_token_id).sum()) == len(DOCS)
    seq_len = 37
    packed = pack_blocks(stream, seq_len)
    assert packed.blocks.shape == (len(expected) // seq_len, seq_len)
    assert packed.blocks.reshape(-1).tolist() == expected[: packed.blocks.size]  # only the tail is dropped
    assert len(expected) - packed.blocks.size < seq_len
    assert packed.efficiency == packed.blocks.size / len(expected)
    decoded = tokenizer.decode(packed.blocks.reshape(-1)[:200].tolist(), skip_special_tokens=False)
    assert f"{DOCS[0]}</s>{DOCS[1]}</s>" in decoded


def test_special_token_strings_in_the_text_are_parsed_or_plain_text():
    tokenizer = _tokenizer()
    docs = ["code says '</s>' and <pad> here", "no specials", "<s>html</s>"]
    ds = datasets.Dataset.from_dict({"text": docs})
    eos, specials = tokenizer.eos_token_id, set(tokenizer.all_special_ids)
    parsed = [row["input_ids"] for row in tokenize_dataset(ds, tokenizer)]
    plain = [row["input_ids"] for row in tokenize_dataset(ds, tokenizer, special_tokens_in_text="plain")]
    assert [ids.count(eos) for ids in parsed] == [2, 1, 2]  # a literal "</s>" ends a document
    assert [ids.count(eos) for ids in plain] == [1, 1, 1]  # only the appended EOS
    assert all(not specials & set(ids[:-1]) for ids in plain)
    for doc, ids in zip(docs, plain, strict=True):
        assert tokenizer.decode(ids[:-1], skip_special_tokens=False) == doc


def test_token_stream_follows_a_selected_order():
    tokenizer = _tokenizer()
    tokenized = tokenize_dataset(datasets.Dataset.from_dict({"text": DOCS[:10]}), tokenizer)
    reordered = tokenized.select([3, 1, 2])
    expected = sum((tokenized[i]["input_ids"] for i in (3, 1, 2)), [])
    assert token_stream(reordered).tolist() == expected


def test_document_positions_and_mask():
    eos = 9
    ids = torch.tensor([[1, 2, eos, 3, 4, 5, eos, 6]])
    doc_ids, positions = document_positions(ids, eos)
    assert doc_ids.tolist() == [[0, 0, 0, 1, 1, 1, 1, 2]]
    assert positions.tolist() == [[0, 1, 2, 0, 1, 2, 3, 0]]
    mask = block_attention_mask(doc_ids, causal=True)[0, 0]
    assert mask[4].tolist() == [False, False, False, True, True, False, False, False]
    bidirectional = block_attention_mask(doc_ids, causal=False)[0, 0]
    assert bidirectional[3].tolist() == [False, False, False, True, True, True, True, False]
    assert np.array_equal(mask.numpy(), (bidirectional & torch.ones(8, 8, dtype=torch.bool).tril()).numpy())
