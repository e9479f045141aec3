"""The permutation-LM collator: perm_mask against the sampled order, target statistics, no leaks.

XLNet's factorisation order puts the context (tokens that are neither targets nor special) first,
then the targets and special tokens in the sampled order; "later" below means later in that order.
"""

from __future__ import annotations

import pytest
import torch
from transformers import XLNetConfig, XLNetLMHeadModel

from pretrain.config import ConfigError, build_config
from pretrain.objectives.permutation import PermutationConfig, PermutationLM
from pretrain.objectives.plm_collator import PermutationCollator, sample_order, sample_targets
from pretrain.settings import make_run_config

VOCAB = 300
SPECIAL = (0, 1, 2)  # <s> <pad> </s>, say: never targets, keep their place in the order


def make_collator() -> PermutationCollator:
    functional = torch.zeros(VOCAB, dtype=torch.bool)
    functional[list(SPECIAL)] = True
    return PermutationCollator(functional=functional)


def random_blocks(batch_size: int, seq_len: int, seed: int, special_rate: float = 0.05) -> list[dict]:
    """Blocks of ordinary ids with a sprinkling of special ids (document separators, padding)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(len(SPECIAL), VOCAB, (batch_size, seq_len), generator=g)
    specials = torch.tensor(SPECIAL)[torch.randint(len(SPECIAL), (batch_size, seq_len), generator=g)]
    ids = torch.where(torch.rand((batch_size, seq_len), generator=g) < special_rate, specials, ids)
    return [{"input_ids": row} for row in ids]


def collate_with_order(collator: PermutationCollator, examples: list[dict], seed: int):
    """A batch, and its targets and factorisation order reconstructed by replaying the generator."""
    batch = collator(examples, torch.Generator().manual_seed(seed))
    b, t = batch["input_ids"].shape
    replay = torch.Generator().manual_seed(seed)
    spans = sample_targets(b, t, collator.plm_probability, collator.max_span_length, replay)
    order = sample_order(b, t, replay)
    return batch, spans, order


def target_positions(batch: dict) -> torch.Tensor:
    """(b, t) bool: positions that some target_mapping row picks."""
    return batch["target_mapping"].sum(1) > 0


def test_perm_mask_follows_the_sampled_order_for_many_batches():
    collator = make_collator()
    for seed in range(100):
        batch, spans, order = collate_with_order(collator, random_blocks(8, 64, seed), seed)
        mask = batch["perm_mask"]  # True = may not attend
        special = collator.functional[batch["input_ids"]]
        is_target = target_positions(batch)
        assert torch.equal(is_target, spans & ~special), "targets are the sampled spans minus special tokens"
        step = torch.where(is_target | special, order, -1)  # context first (-1), then the sampled order
        later_or_self = step[:, None, :] >= step[:, :, None]  # [b, i, j]: j is i or after i
        earlier = step[:, None, :] < step[:, :, None]
        rows = is_target[:, :, None].expand_as(mask)
        # No target sees itself or anything later in the order ...
        assert mask[rows & later_or_self].all()
        # ... and every non-target token is visible to all targets after it (context is before all).
        non_target_cols = (~is_target)[:, None, :].expand_as(mask)
        assert not mask[rows & non_target_cols & earlier].any()
        # Targets see the targets before them: the order is not collapsed to a bag of masks.
        assert not mask[rows & is_target[:, None, :] & earlier].any()
        # Context tokens see exactly the context, so they carry no target's token to anyone.
        context = ~(is_target | special)
        assert torch.equal(~mask[context], context[:, None, :].expand_as(mask)[context])


def test_no_target_reaches_its_own_token_through_any_number_of_layers():
    """Transitive closure of visibility (content streams see themselves): never back to a target."""
    collator = make_collator()
    for seed in range(20):
        batch, _, order = collate_with_order(collator, random_blocks(4, 64, seed, special_rate=0.2), seed)
        visible = ~batch["perm_mask"]
        content = visible | torch.eye(64, dtype=torch.bool)  # XLNet's content stream always sees itself
        reach = visible.clone()
        for _ in range(8):  # paths of up to 2^8 hops
            reach = reach | (reach.float() @ content.float() > 0)
        is_target = target_positions(batch)
        special = collator.functional[batch["input_ids"]]
        step = torch.where(is_target | special, order, -1)
        later_or_self = step[:, None, :] >= step[:, :, None]
        assert not (reach & is_target[:, :, None] & later_or_self).any()


def test_target_rate_is_one_sixth_over_half_a_million_tokens():
    collator = make_collator()
    targets = tokens = 0
    for seed in range(64):  # 64 x 32 x 256 = 524,288 tokens
        batch = collator(random_blocks(32, 256, seed, special_rate=0.0), torch.Generator().manual_seed(seed))
        targets += int((batch["labels"] != -100).sum())
        tokens += batch["input_ids"].numel()
    assert tokens >= 500_000
    assert abs(targets / tokens - 1 / 6) < 0.01


def test_spans_are_at_most_five_tokens_and_lengths_are_uniform():
    collator = make_collator()
    counts = torch.zeros(257, dtype=torch.long)
    for seed in range(32):
        batch = collator(random_blocks(32, 256, seed, special_rate=0.0), torch.Generator().manual_seed(seed))
        is_target = target_positions(batch).int()
        # Lengths of maximal runs of consecutive targets: the cumsum at each run's end minus its start.
        padded = torch.nn.functional.pad(is_target, (1, 1))
        starts = (padded[:, 1:] - padded[:, :-1] == 1).nonzero()
        ends = (padded[:, 1:] - padded[:, :-1] == -1).nonzero()
        counts += torch.bincount(ends[:, 1] - starts[:, 1], minlength=257)
    assert counts[6:].sum() == 0, "a run of targets longer than max_span_length"
    shares = counts[1:6].double() / counts.sum()
    # L ~ U{1..5} per window; the last window of a block may be cut short, so allow 2 points.
    assert torch.allclose(shares, torch.full((5,), 0.2, dtype=torch.float64), atol=0.02), shares


def test_labels_target_mapping_and_special_tokens():
    collator = make_collator()
    batch = collator(random_blocks(16, 128, 0, special_rate=0.3), torch.Generator().manual_seed(0))
    ids, labels, mapping = batch["input_ids"], batch["labels"], batch["target_mapping"]
    assert mapping.shape[:2] == labels.shape and mapping.shape[2] == ids.shape[1]
    real = labels != -100
    assert torch.equal(mapping.sum(2), real.float()), "one-hot rows for targets, zero rows for padding"
    positions = mapping.argmax(2)
    assert torch.equal(labels[real], ids.gather(1, positions)[real]), "labels are the tokens at the targets"
    # #8409: a token is functional if it is padding OR special; none is ever a target.
    assert not collator.functional[labels[real]].any()
    assert batch["perm_mask"].dtype == torch.bool and mapping.dtype == torch.float32


def test_same_generator_seed_gives_the_same_batch():
    collator = make_collator()
    examples = random_blocks(4, 64, 0)
    a = collator(examples, torch.Generator().manual_seed(7))
    b = collator(examples, torch.Generator().manual_seed(7))
    c = collator(examples, torch.Generator().manual_seed(8))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["perm_mask"], c["perm_mask"])


def test_odd_sequence_length_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="even"):
        make_collator()(random_blocks(2, 63, 0), torch.Generator().manual_seed(0))
    cfg = build_config(make_run_config(PermutationConfig), {"data.seq_len": 63, "model.family": "xlnet"})
    with pytest.raises(ConfigError, match=r"--data\.seq_len=64"):
        PermutationLM(cfg, tokenizer=None)


def test_document_mask_is_refused():
    cfg = build_config(make_run_config(PermutationConfig), {"data.document_mask": True})
    with pytest.raises(ConfigError, match="document_mask"):
        PermutationLM(cfg, tokenizer=None)


def test_config_rejects_a_rate_without_room_for_context():
    with pytest.raises(ConfigError, match="plm_probability"):
        PermutationConfig(plm_probability=0.7)


def test_xlnet_prediction_does_not_change_when_its_own_and_later_tokens_change():
    """End to end through a real XLNet: a target's logits depend on earlier tokens only."""
    torch.manual_seed(0)
    config = XLNetConfig(vocab_size=VOCAB, d_model=64, n_layer=3, n_head=4, d_inner=128, dropout=0.0)
    model = XLNetLMHeadModel(config).eval()
    collator = make_collator()
    batch, _, order = collate_with_order(collator, random_blocks(4, 64, 3, special_rate=0.1), 3)
    is_target = target_positions(batch)
    special = collator.functional[batch["input_ids"]]
    step = torch.where(is_target | special, order, -1)
    # In each row, the target last in the order: the one with the most to condition on.
    positions = batch["target_mapping"].argmax(2)  # (b, n)
    steps = torch.where(batch["labels"] != -100, step.gather(1, positions), -2)
    slot = steps.argmax(1)  # (b,)
    own_step = steps.amax(1, keepdim=True)
    own_and_later = step >= own_step
    earlier_targets = is_target & (step < own_step)

    def logits_after_changing(where: torch.Tensor) -> torch.Tensor:
        ids = torch.where(where, (batch["input_ids"] + 7) % VOCAB, batch["input_ids"])
        with torch.no_grad():
            out = model(
                input_ids=ids,
                perm_mask=batch["perm_mask"],
                target_mapping=batch["target_mapping"],
                use_mems=False,
            )
        return out.logits[torch.arange(len(slot)), slot]  # (b, v)

    original = logits_after_changing(torch.zeros_like(is_target))
    torch.testing.assert_close(logits_after_changing(own_and_later), original, rtol=0, atol=1e-6)
    # The targets before it do feed it (PLM conditions on earlier targets' tokens).
    assert (logits_after_changing(earlier_targets) - original).abs().amax(1).min() > 1e-4
