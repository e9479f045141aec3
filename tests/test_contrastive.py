"""Contrastive objective units: InfoNCE, retrieval statistics, pooling, collation, paragraphs, STS files."""

from __future__ import annotations

import json
import math

import datasets
import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from pretrain.config import parse_config
from pretrain.data.tokenizer import set_post_processor, train_bpe_tokenizer
from pretrain.objectives.contrastive import Contrastive, crop, paragraph_items, pool
from pretrain.objectives.retrieval import (
    info_nce,
    load_sts_pairs,
    retrieval_metrics,
    retrieval_stats,
    spearman,
)
from pretrain.settings import make_run_config

TEXTS = [
    "The for statement iterates over the items of any sequence in the order they appear.",
    "A class definition defines a class object whose attributes are set in its body.",
    "Exceptions are raised by the raise statement and handled by try and except clauses.",
    "The with statement wraps the execution of a block with methods of a context manager.",
    "Lambda expressions create anonymous functions that evaluate a single expression.",
    "Dictionaries map hashable keys to arbitrary values and keep their insertion order.",
]


@pytest.fixture(scope="module")
def tokenizer():
    tok = train_bpe_tokenizer(datasets.Dataset.from_dict({"text": TEXTS * 20}), 512)
    set_post_processor(tok, "roberta")
    return tok


def make_objective(tokenizer, *overrides: str) -> Contrastive:
    argv = [
        "--model.family=roberta",
        "--model.hidden_size=32",
        "--model.num_layers=2",
        "--model.num_heads=2",
        "--model.dropout=0.1",
        "--data.seq_len=32",
        *overrides,
    ]
    return Contrastive(parse_config(make_run_config(Contrastive.Config), argv), tokenizer)


def items(tokenizer, texts: list[str]) -> list[dict[str, torch.Tensor]]:
    """Dataset-style items whose query and document are both the text itself."""
    ids = [
        torch.tensor(e.ids) for e in tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
    ]
    return [{"text": i, "query": i, "doc": i} for i in ids]


def test_info_nce_hand_computed_case():
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    candidates = torch.tensor([[2.0, 0.0], [0.6, 0.8]])  # cosines: [[1, 0.6], [0, 0.8]]
    loss, correct = info_nce(anchors, candidates, torch.tensor([0, 1]), temperature=0.05)
    # anchor 0: logits (20, 12) -> log(1 + e^-8); anchor 1: logits (0, 16) -> log(1 + e^-16)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-8)) + math.log1p(math.exp(-16)), rel=1e-5)
    assert correct.item() == 2


def test_info_nce_on_identical_pairs_reaches_accuracy_one():
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    loss, correct = info_nce(x, x.clone(), torch.arange(64), temperature=0.05)
    assert correct.item() == 64
    # each anchor's own logit is 1/tau = 20, the others are cos/tau < 20: the loss is below log(64)
    assert 0 < loss.item() / 64 < math.log(64) / 10


def test_encoder_on_identical_texts_retrieves_every_one(tokenizer):
    objective = make_objective(tokenizer)
    set_seed(0)
    model = objective.build_model().eval()
    batch = objective.collate(items(tokenizer, TEXTS), torch.Generator())
    with torch.no_grad():
        out = objective.compute_loss(model, batch)
    assert out.stats["hits_at_1"].item() == len(TEXTS) == out.num_targets.item()
    assert out.stats["alignment"].item() == pytest.approx(0.0, abs=1e-8)


def test_retrieval_stats_hand_computed_ranks():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    d = torch.tensor([[0.8, 0.6], [1.0, 0.0], [0.0, 1.0]])
    # sims rows: (0.8, 1, 0), (0.6, 0, 1), (0.96, 0.6, 0.8): true documents rank 2, 3, 2
    stats = retrieval_stats(q, d, temperature=0.05)
    m = retrieval_metrics({k: float(v) for k, v in stats.items()})
    assert m["recall@1"] == 0.0 and m["recall@10"] == 1.0
    assert m["mrr"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 2) / 3)
    assert m["alignment"] == pytest.approx((0.4 + 2.0 + 0.4) / 3)
    both = torch.cat([q, d])
    direct = torch.pdist(both).pow(2).mul(-2).exp().mean().log().item()  # Wang & Isola's uniformity
    assert m["uniformity"] == pytest.approx(direct, rel=1e-6)
    assert m["pool_size"] == 3


def test_collapsed_encoder_ranks_last_not_first():
    same = torch.ones(5, 4)
    m = retrieval_metrics({k: float(v) for k, v in retrieval_stats(same, same, 0.05).items()})
    assert m["recall@1"] == 0.0 and m["mrr"] == pytest.approx(1 / 5)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_pooling_masks_padding(tokenizer, pooling):
    hidden = torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    garbage = hidden.clone()
    garbage[0, 3:] = 1e4  # what padded positions hold must not matter
    torch.testing.assert_close(pool(hidden, mask, pooling), pool(garbage, mask, pooling))
    if pooling == "mean":
        torch.testing.assert_close(pool(hidden, mask, "mean")[0], hidden[0, :3].mean(0))

    objective = make_objective(tokenizer, f"--objective.pooling={pooling}")
    set_seed(0)
    model = objective.build_model().eval()
    short, long = items(tokenizer, [TEXTS[0][:20], TEXTS[1]])
    alone = objective.collate([short], torch.Generator())
    padded = objective.collate([short, long], torch.Generator())
    assert padded["query_mask"][0].sum() < padded["query_mask"].shape[1]  # the short one is padded
    with torch.no_grad():
        a = model(alone["query_ids"], alone["query_mask"])[0]
        b = model(padded["query_ids"], padded["query_mask"])[0][:1]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_collate_wraps_truncates_and_masks_for_mlm_at_the_rates(tokenizer):
    objective = make_objective(tokenizer, "--objective.mlm_weight=0.1")
    examples = items(tokenizer, TEXTS * 60)
    batch = objective.collate(examples, torch.Generator().manual_seed(1))
    ids, mask = batch["text_ids"], batch["text_mask"]
    assert ids.shape[1] <= 32 and bool((ids[:, 0] == tokenizer.bos_token_id).all())
    lengths = mask.sum(1)
    assert bool((ids[torch.arange(len(ids)), lengths - 1] == tokenizer.eos_token_id).all())
    assert bool((ids[mask == 0] == tokenizer.pad_token_id).all())
    labels = batch["mlm_labels"]
    selected = labels != -100
    body = (mask == 1) & (ids != tokenizer.bos_token_id) & (ids != tokenizer.eos_token_id)
    assert not bool(selected[~body].any())  # specials and padding are never masked
    rate = selected.sum().item() / body.sum().item()
    assert 0.13 < rate < 0.17  # BERT's 15%, over ~6,000 tokens
    masked = (batch["mlm_ids"] == tokenizer.mask_token_id) & selected
    assert 0.75 < masked.sum().item() / selected.sum().item() < 0.85  # 80% <mask>
    torch.testing.assert_close(labels[selected], ids[selected])
    again = objective.collate(examples, torch.Generator().manual_seed(1))
    assert torch.equal(again["mlm_ids"], batch["mlm_ids"])  # all randomness from the generator


def test_paragraph_items_cut_each_paragraph_in_halves():
    doc = "one two three four five six seven eight nine\n\nshort one\n  \nalpha beta gamma delta\nepsilon zeta eta theta"
    out = paragraph_items({"text": [doc]}, min_words=8)
    assert out["text"] == [
        "one two three four five six seven eight nine",
        "alpha beta gamma delta epsilon zeta eta theta",
    ]
    for text, query, document in zip(out["text"], out["query"], out["doc"], strict=True):
        assert f"{query} {document}" == text
        assert abs(len(query.split()) - len(document.split())) <= 1


def test_crops_are_spans_of_the_paragraph_with_lengths_over_the_ratio_range():
    ids, generator = torch.arange(100, 200), torch.Generator().manual_seed(0)
    lengths = []
    for _ in range(4000):
        span = crop(ids, (0.1, 0.5), generator)
        start = int(span[0]) - 100
        assert torch.equal(span, ids[start : start + len(span)])  # contiguous
        lengths.append(len(span))
    assert min(lengths) == 10 and max(lengths) == 50
    assert abs(sum(lengths) / len(lengths) - 30) < 0.5  # uniform fraction: mean (0.1 + 0.5) / 2 of 100
    assert len(crop(torch.tensor([7]), (0.1, 0.5), generator)) == 1  # never empty


def test_crop_views_are_two_independent_spans_of_each_text(tokenizer):
    objective = make_objective(tokenizer, "--objective.views=crop", "--data.seq_len=64")
    examples = items(tokenizer, TEXTS * 20)
    batch = objective.collate(examples, torch.Generator().manual_seed(3))
    assert objective._training_views(batch) == ("crop_a", "crop_b")
    simcse = make_objective(tokenizer, "--objective.views=dropout")
    assert simcse._training_views(simcse.collate(examples, torch.Generator())) == ("text", "text")
    differ = 0
    for i, example in enumerate(examples):
        text = example["text"].tolist()
        a, b = (batch[f"{v}_ids"][i][batch[f"{v}_mask"][i] == 1][1:-1].tolist() for v in ("crop_a", "crop_b"))
        for span in (a, b):  # a contiguous span of the paragraph's tokens, between <s> and </s>
            assert any(text[j : j + len(span)] == span for j in range(len(text) - len(span) + 1))
            assert 0.1 * len(text) - 1 <= len(span) <= 0.5 * len(text) + 1
        differ += a != b
    assert differ > 0.9 * len(examples)
    again = objective.collate(examples, torch.Generator().manual_seed(3))
    assert torch.equal(again["crop_a_ids"], batch["crop_a_ids"])  # all randomness from the generator


@pytest.mark.parametrize("ratio", ["[0.0,0.5]", "[0.6,0.5]", "[0.1,1.5]", "[0.1,0.2,0.3]"])
def test_bad_crop_ratio_is_refused(tokenizer, ratio):
    with pytest.raises(Exception, match="crop_ratio"):
        make_objective(tokenizer, f"--objective.crop_ratio={ratio}")


def test_count_tokens_counts_the_real_tokens_of_the_training_views(tokenizer):
    examples = items(tokenizer, TEXTS * 3)
    simcse = make_objective(tokenizer)  # the text twice, each <s> ids </s> within data.seq_len=32
    batch = simcse.collate(examples, torch.Generator())
    assert simcse.count_tokens(batch) == 2 * sum(min(len(e["text"]), 30) + 2 for e in examples)
    assert simcse.count_tokens(batch) < 2 * batch["text_ids"].numel()  # padding is not counted
    crop = make_objective(tokenizer, "--objective.views=crop")
    batch = crop.collate(examples, torch.Generator().manual_seed(0))
    assert crop.count_tokens(batch) == int(batch["crop_a_mask"].sum() + batch["crop_b_mask"].sum())


def test_trainer_counts_contrastive_tokens_and_refuses_a_token_budget(tmp_path, cache_dir):
    import copy

    from conftest import make_trainer

    from pretrain.config import ConfigError

    args = ("--model.family=roberta", "--model.dropout=0.1", "--train.max_steps=3", "--train.logging_steps=1")
    trainer = make_trainer(tmp_path / "run", *args, objective_cls=Contrastive)
    replay = copy.deepcopy(trainer.batches)  # the same batches, in order, before training takes them
    trainer.train()
    expected = sum(trainer.objective.count_tokens(next(replay)) for _ in range(3))
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1]["tokens_seen"] == trainer.state.tokens_seen == expected
    assert (
        0 < expected < 3 * 2 * trainer.tokens_per_step
    )  # two views of at most a block each, padding not counted
    with pytest.raises(ConfigError, match="max_steps"):
        make_trainer(tmp_path / "budget", *args, "--train.max_tokens=10000", objective_cls=Contrastive)


def test_unsupervised_mode_needs_dropout(tokenizer):
    with pytest.raises(Exception, match="dropout"):
        make_objective(tokenizer, "--model.dropout=0.0")


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_sts_files_and_spearman(tmp_path, suffix):
    rows = [("a cat", "a cat", 5.0), ("a dog", "the dog", 3.5), ("a car", "a tree", 0.5)]
    path = tmp_path / f"sts{suffix}"
    if suffix == ".jsonl":
        path.write_text(
            "\n".join(
                json.dumps(dict(zip(("sentence1", "sentence2", "score"), r, strict=True))) for r in rows
            )
        )
    else:
        sep = "\t" if suffix == ".tsv" else ","
        path.write_text(
            f"sentence1{sep}sentence2{sep}score\n" + "\n".join(sep.join(map(str, r)) for r in rows)
        )
    first, second, gold = load_sts_pairs(str(path))
    assert first[1] == "a dog" and second[2] == "a tree" and gold == [5.0, 3.5, 0.5]
    assert spearman(torch.tensor([0.9, 0.5, 0.1]), gold) == pytest.approx(1.0)
    assert spearman(torch.tensor([0.1, 0.5, 0.9]), gold) == pytest.approx(-1.0)


def test_build_dataset_tokenizes_paragraph_views(tokenizer):
    objective = make_objective(tokenizer)
    raw = datasets.Dataset.from_dict({"text": ["\n\n".join(TEXTS)]})
    data = objective.build_dataset(raw, Accelerator(cpu=True))
    assert len(data) == len(TEXTS)
    decoded = {tokenizer.decode(data[i]["text"]) for i in range(len(data))}
    assert decoded == set(TEXTS)


def test_auxiliary_mlm_loss_adds_to_the_training_loss(tokenizer):
    examples = items(tokenizer, TEXTS)
    losses = {}
    for weight in (0.0, 0.5):
        objective = make_objective(tokenizer, f"--objective.mlm_weight={weight}")
        set_seed(0)
        model = objective.build_model().train()
        batch = objective.collate(examples, torch.Generator().manual_seed(0))
        torch.manual_seed(0)  # the same dropout masks for both weights
        out = objective.compute_loss(model, batch)
        out.loss_sum.backward()
        losses[weight] = out.loss_sum.item()
        assert out.num_targets.item() == len(TEXTS)
    # with weight 0.5: 6 anchors x 0.5 x the mean token loss over a random-init vocabulary of ~512 tokens
    assert losses[0.5] - losses[0.0] == pytest.approx(len(TEXTS) * 0.5 * math.log(len(tokenizer)), rel=0.25)
