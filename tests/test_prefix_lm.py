"""Prefix LM: the mask is bidirectional in each prefix, causal after it, and closed between documents."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from pretrain.objectives.models import build_decoder_config
from pretrain.objectives.prefix_lm import prefix_lm_inputs
from pretrain.settings import ModelConfig

EOS, VOCAB = 2, 512


def tiny_model(family: str) -> torch.nn.Module:
    cfg = ModelConfig(family=family, hidden_size=64, num_layers=2, num_heads=4)
    config = build_decoder_config(cfg, VOCAB, 64, {"bos": 0, "eos": EOS, "pad": 1})
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()


def logits_of(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], input_ids: torch.Tensor
) -> torch.Tensor:
    with torch.no_grad():
        return model(
            input_ids=input_ids, position_ids=batch["position_ids"], attention_mask=batch["attention_mask"]
        ).logits[0]


def one_document(t: int = 24, seed: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    """A row holding one document, its prefix-LM batch and its prefix length (>= 4 for the tests)."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, VOCAB, (1, t), generator=g)
    batch = prefix_lm_inputs(input_ids, EOS, 0.3, 0.7, g)
    prefix_len = int((batch["labels"][0] == -100).sum())
    return input_ids, batch, prefix_len


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_prefix_is_bidirectional_and_suffix_causal(family):
    model = tiny_model(family)
    input_ids, batch, p = one_document()
    assert 4 <= p < input_ids.shape[1]
    base = logits_of(model, batch, input_ids)
    # A late prefix token is seen by every earlier prefix position.
    changed = input_ids.clone()
    changed[0, p - 1] = (changed[0, p - 1] + 1) % VOCAB
    moved = (logits_of(model, batch, changed) - base).abs().amax(-1)
    assert (moved[: p - 1] > 1e-4).all()
    # A suffix token is never seen by an earlier position (prefix or suffix).
    for s in (p, input_ids.shape[1] - 3):
        changed = input_ids.clone()
        changed[0, s] = (changed[0, s] + 1) % VOCAB
        torch.testing.assert_close(logits_of(model, batch, changed)[:s], base[:s], rtol=0, atol=1e-6)


def test_labels_are_ignored_exactly_on_prefixes():
    input_ids, batch, p = one_document()
    labels = batch["labels"][0]
    assert (labels[:p] == -100).all()
    assert torch.equal(labels[p:], input_ids[0, p:])


def test_documents_never_see_each_other():
    model = tiny_model("gpt2")
    g = torch.Generator().manual_seed(1)
    input_ids = torch.randint(5, VOCAB, (1, 30), generator=g)
    input_ids[0, 11] = EOS  # document A = tokens 0..11, document B = 12..29
    batch = prefix_lm_inputs(input_ids, EOS, 0.0, 1.0, g)
    assert batch["position_ids"][0, 12] == 0  # positions restart in document B
    base = logits_of(model, batch, input_ids)
    for position, other in ((3, slice(12, 30)), (20, slice(0, 12))):
        changed = input_ids.clone()
        changed[0, position] = (changed[0, position] + 1) % VOCAB
        torch.testing.assert_close(logits_of(model, batch, changed)[other], base[other], rtol=0, atol=1e-6)


def test_split_points_follow_the_configured_range():
    """Each document's prefix is floor(f * length) tokens, f uniform on [min, max); the last token is a target."""
    g = torch.Generator().manual_seed(3)
    input_ids = torch.randint(5, VOCAB, (1024, 200), generator=g)
    input_ids[:, 99] = EOS  # two documents of 100 tokens per row
    for lo, hi in ((0.0, 1.0), (0.25, 0.5)):
        labels = prefix_lm_inputs(input_ids, EOS, lo, hi, g)["labels"]
        prefix = (labels == -100).view(1024, 2, 100).sum(-1).float() / 100  # (rows, documents)
        assert (prefix >= lo - 1e-6).all() and (prefix < hi).all()
        # 2048 draws: the mean's sd is at most 0.0064 (uniform on [0, 1)), flooring lowers it by ~0.005.
        assert abs(prefix.mean().item() - (lo + hi) / 2) < 0.03
        assert (labels.view(1024, 2, 100)[:, :, -1] != -100).all()


def test_cached_decoding_after_a_bidirectional_prefix_equals_the_training_mask():
    """The README's inference recipe: one pass over the prefix with an all-True mask fills the cache,
    then plain cached decoding is causal; together they reproduce the training mask's logits."""
    model = tiny_model("gpt2")
    input_ids, batch, p = one_document()
    full = logits_of(model, batch, input_ids)
    prefix_mask = torch.ones(1, 1, p, p, dtype=torch.bool)
    with torch.no_grad():
        out = model(input_ids[:, :p], attention_mask=prefix_mask, use_cache=True)
        steps = [out.logits[0, -1]]
        cache = out.past_key_values
        for i in range(p, input_ids.shape[1] - 1):
            out = model(input_ids[:, i : i + 1], past_key_values=cache, use_cache=True)
            steps.append(out.logits[0, -1])
            cache = out.past_key_values
    torch.testing.assert_close(torch.stack(steps), full[p - 1 : -1], rtol=1e-4, atol=1e-4)
