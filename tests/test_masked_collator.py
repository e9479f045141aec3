"""BERT masking statistics over a million tokens, whole words, sentence pairs, document masks, config errors."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from pretrain.config import ConfigError, parse_config
from pretrain.objectives.masked import MaskedLM, build_sentence_pairs
from pretrain.settings import make_run_config

ROWS, SEQ_LEN = 2048, 512  # 1,048,576 tokens per statistical test


@pytest.fixture(scope="module")
def tokenizer(cache_dir):
    """The project's byte-level BPE trained on the embedded corpus, with the masked objective's setup."""
    from pretrain.data.text import load_raw_datasets
    from pretrain.data.tokenizer import build_tokenizer, set_post_processor
    from pretrain.settings import DataConfig

    train_raw, _ = load_raw_datasets(DataConfig())
    tok = build_tokenizer("", train_raw, 2048, cache_dir)
    set_post_processor(tok, MaskedLM.post_processor)
    return tok


@pytest.fixture(scope="module")
def corpus_text() -> str:
    from pretrain.data.text import embedded_documents

    return "\n\n".join(embedded_documents())


def make_objective(tokenizer, *overrides: str) -> MaskedLM:
    cfg = parse_config(make_run_config(MaskedLM.Config), ["--model.family=roberta", *overrides])
    return MaskedLM(cfg, tokenizer)


def corpus_rows(tokenizer, text: str) -> torch.Tensor:
    """(ROWS, SEQ_LEN) real token ids, with special tokens sprinkled in and padded row tails."""
    ids = tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids
    stream = np.resize(np.asarray(ids, dtype=np.int64), ROWS * SEQ_LEN)
    rows = torch.from_numpy(stream).view(ROWS, SEQ_LEN).clone()
    g = torch.Generator().manual_seed(7)
    specials = torch.tensor(sorted(tokenizer.all_special_ids))
    sprinkle = torch.rand(rows.shape, generator=g) < 0.02
    rows[sprinkle] = specials[torch.randint(len(specials), (int(sprinkle.sum()),), generator=g)]
    rows[::4, -40:] = tokenizer.pad_token_id  # every fourth row ends in padding
    return rows


@pytest.mark.parametrize(
    ("mask_p", "random_p", "whole_word"),
    [(0.8, 0.1, False), (0.5, 0.4, False), (0.8, 0.1, True)],
)
def test_masking_rates_over_a_million_tokens(tokenizer, corpus_text, mask_p, random_p, whole_word):
    objective = make_objective(
        tokenizer,
        f"--objective.mask_replace_prob={mask_p}",
        f"--objective.random_replace_prob={random_p}",
        f"--objective.whole_word_mask={whole_word}",
    )
    original = corpus_rows(tokenizer, corpus_text)
    inputs, labels = objective.masker(original, torch.Generator().manual_seed(0))
    assert original.numel() >= 1_000_000
    special = torch.isin(original, torch.tensor(tokenizer.all_special_ids))
    selected = labels != -100
    assert special.sum() > 20_000 and (original == tokenizer.pad_token_id).sum() > 20_000
    # Special and pad tokens are never selected nor changed; labels are -100 exactly off the selection.
    assert not (selected & special).any()
    assert torch.equal(inputs[special], original[special])
    assert torch.equal(labels[selected], original[selected])
    assert torch.equal(inputs[~selected], original[~selected])
    rate = selected.sum() / (~special).sum()
    assert abs(rate - 0.15) < 0.005, rate
    masked = selected & (inputs == tokenizer.mask_token_id)
    kept = selected & (inputs == original)
    randomised = selected & ~masked & ~kept
    n = selected.sum()
    assert abs(masked.sum() / n - mask_p) < 0.01
    assert abs(randomised.sum() / n - random_p) < 0.01
    assert abs(kept.sum() / n - (1 - mask_p - random_p)) < 0.01
    # Random replacements are never special tokens, and they spread over the vocabulary.
    replacements = inputs[randomised]
    assert not torch.isin(replacements, torch.tensor(tokenizer.all_special_ids)).any()
    assert len(replacements.unique()) > 0.9 * (len(tokenizer) - len(tokenizer.all_special_ids))


def test_whole_word_masking_selects_every_sub_token_of_a_word(tokenizer, corpus_text):
    """Words are whitespace-separated runs of the text itself (found from offsets, not from our tables)."""
    objective = make_objective(tokenizer, "--objective.whole_word_mask=true")
    encoding = tokenizer.backend_tokenizer.encode(corpus_text, add_special_tokens=False)
    n = len(encoding.ids) // SEQ_LEN * SEQ_LEN
    word_of_char = np.full(len(corpus_text) + 1, -1)
    for k, match in enumerate(re.finditer(r"\S+", corpus_text)):
        word_of_char[match.start() : match.end()] = k
    # A token belongs to the word of its first non-space character (whitespace-only tokens: none).
    word_of_token = np.full(n, -1)
    for t, (start, end) in enumerate(encoding.offsets[:n]):
        chars = word_of_char[start:end]
        word_of_token[t] = chars[chars >= 0][0] if (chars >= 0).any() else -1
    ids = torch.tensor(encoding.ids[:n]).view(-1, SEQ_LEN)
    _, labels = objective.masker(ids, torch.Generator().manual_seed(1))
    selected = (labels != -100).flatten().numpy()
    # Group by (row, word): a word cut by a row boundary is two words of two sequences.
    row = np.arange(n) // SEQ_LEN
    keep = word_of_token >= 0
    _, group = np.unique(np.stack([row[keep], word_of_token[keep]]), axis=1, return_inverse=True)
    tokens = np.bincount(group)
    chosen = np.bincount(group, weights=selected[keep])
    assert ((chosen == 0) | (chosen == tokens)).all(), "a word was partially selected"
    multi_token_chosen = ((tokens > 1) & (chosen == tokens)).sum()
    assert multi_token_chosen > 1000
    assert abs(selected.mean() - 0.15) < 0.01


def test_masks_come_only_from_the_generator(tokenizer):
    objective = make_objective(tokenizer)
    examples = [{"input_ids": torch.arange(5, 105)} for _ in range(4)]
    first = objective.collate(examples, torch.Generator().manual_seed(3))
    again = objective.collate(examples, torch.Generator().manual_seed(3))
    other = objective.collate(examples, torch.Generator().manual_seed(4))
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["labels"], other["labels"])
    assert (first["input_ids"][:, 0] == tokenizer.bos_token_id).all()  # <s> opens every block
    assert first["input_ids"].shape == (4, 101)


def test_sentence_order_pairs_rebuild_the_block():
    blocks = torch.arange(10, 10 + 64 * 30).view(64, 30)
    ids, types, labels = build_sentence_pairs(blocks, None, 0, 2, torch.Generator().manual_seed(0))
    assert ids.shape == types.shape == (64, 33)
    assert 16 < labels.sum() < 48
    for row, block, label, ttype in zip(ids, blocks, labels, types, strict=True):
        assert row[0] == 0 and row[-1] == 2
        sep = int((row[1:-1] == 2).nonzero()[0]) + 1
        first, second = row[1:sep], row[sep + 1 : -1]
        assert len(first) > 0 and len(second) > 0
        order = (second, first) if label else (first, second)
        assert torch.equal(torch.cat(order), block)
        assert (ttype[: sep + 1] == 0).all() and (ttype[sep + 1 :] == 1).all()


def test_next_sentence_pairs_take_a_random_second_segment_from_another_block():
    blocks = torch.arange(10, 10 + 64 * 30).view(64, 30)
    others = blocks + 10_000
    ids, _, labels = build_sentence_pairs(blocks, others, 0, 2, torch.Generator().manual_seed(0))
    assert 16 < labels.sum() < 48
    for row, block, other, label in zip(ids, blocks, others, labels, strict=True):
        sep = int((row[1:-1] == 2).nonzero()[0]) + 1
        first, second = row[1:sep], row[sep + 1 : -1]
        assert torch.equal(first, block[: len(first)])
        assert torch.equal(second, (other if label else block)[len(first) :])


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_document_mask_keeps_attention_inside_documents(tokenizer, family):
    """A document's logits in a packed row equal its logits alone: no cross-document attention, and
    positions restart (RoBERTa's offset by padding_idx + 1 included)."""
    objective = make_objective(
        tokenizer,
        f"--model.family={family}",
        "--model.hidden_size=64",
        "--model.num_layers=2",
        "--model.num_heads=4",
        "--data.seq_len=32",
        "--data.document_mask=true",
    )
    torch.manual_seed(0)
    model = objective.build_model().eval()
    eos = tokenizer.eos_token_id
    doc_a, doc_b = torch.arange(100, 112), torch.arange(200, 217)
    block = torch.cat([doc_a, torch.tensor([eos]), doc_b, torch.tensor([eos])])  # 31 = seq_len - 1 tokens
    batch = objective.collate([{"input_ids": block}], torch.Generator().manual_seed(0))
    assert batch["attention_mask"].shape == (1, 1, 32, 32)
    offset = tokenizer.pad_token_id + 1 if family == "roberta" else 0
    assert batch["position_ids"][0, 14].item() == offset  # doc_b's first token restarts at 0
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    alone = batch["input_ids"][:, 14:]  # doc_b and its </s>, masked the same way
    with torch.no_grad():
        packed = model(**inputs).logits[:, 14:]
        single = model(input_ids=alone).logits
    torch.testing.assert_close(packed, single, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("task", ["none", "nsp"])
def test_loss_matches_the_models_own_loss(tokenizer, task):
    """Summed loss / count equals transformers' mean masked-LM loss (+ its next-sentence loss)."""
    family = "bert" if task == "nsp" else "roberta"
    objective = make_objective(
        tokenizer,
        f"--model.family={family}",
        f"--objective.sentence_task={task}",
        "--model.hidden_size=64",
        "--model.num_layers=1",
        "--model.num_heads=4",
        "--data.seq_len=48",
    )
    torch.manual_seed(0)
    model = objective.build_model()
    blocks = torch.randint(
        5, len(tokenizer), (6, objective.block_len()), generator=torch.Generator().manual_seed(1)
    )
    examples = [{"input_ids": b, "other_ids": b.flip(0)} for b in blocks]
    batch = objective.collate(examples, torch.Generator().manual_seed(2))
    out = objective.compute_loss(model, batch)
    assert out.num_targets == objective.count_targets(batch) > 0
    inputs = {k: v for k, v in batch.items() if k != "sentence_labels"}
    if task == "nsp":
        inputs["next_sentence_label"] = batch["sentence_labels"]
    reference = model(**inputs).loss
    ours = out.stats["mlm_loss_sum"] / out.num_targets
    if task == "nsp":
        ours = ours + out.stats["sentence_loss_sum"] / len(blocks)
    torch.testing.assert_close(ours, reference)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("--objective.mask_replace_prob=0.8", "--objective.random_replace_prob=0.3"), "must not exceed 1"),
        (("--objective.mlm_probability=1.5",), "out of range"),
        (("--objective.sentence_task=nsp", "--data.document_mask=true"), "document_mask"),
    ],
)
def test_bad_settings_fail_with_a_clear_message(tokenizer, overrides, message):
    with pytest.raises(ConfigError, match=message):
        make_objective(tokenizer, *overrides)


def test_sentence_tasks_need_bert(tokenizer):
    objective = make_objective(tokenizer, "--objective.sentence_task=sop")
    with pytest.raises(ConfigError, match="model.family=bert"):
        objective.build_model()
