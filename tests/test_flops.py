"""Parameter and FLOP counts: a hand count, agreement with instantiated models, GPU peak lookup."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralModel,
    RobertaConfig,
    RobertaForMaskedLM,
    T5Config,
    T5ForConditionalGeneration,
    XLNetConfig,
    XLNetLMHeadModel,
)

from pretrain.scaling.flops import PEAK_FLOPS, count_params, lookup_peak_flops, training_flops_per_token

VOCAB = 1000


def _gpt2(**kw) -> GPT2Config:
    return GPT2Config(vocab_size=VOCAB, n_positions=128, n_embd=64, n_layer=2, n_head=4, **kw)


def _llama(**kw) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=192,
        num_hidden_layers=2,
        num_attention_heads=4,
        **kw,
    )


def _t5(**kw) -> T5Config:
    return T5Config(vocab_size=VOCAB, d_model=64, d_kv=16, d_ff=256, num_layers=2, num_heads=4, **kw)


# BERT and RoBERTa share one shape.
BERT_SHAPE = {
    "vocab_size": VOCAB,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 256,
}


def test_gpt2_counts_match_a_hand_count():
    d, layers, seq_len = 64, 2, 128
    ln = 2 * d  # LayerNorm weight + bias
    attention = ln + (d * 3 * d + 3 * d) + (d * d + d)  # ln_1, c_attn, c_proj
    mlp = ln + (d * 4 * d + 4 * d) + (4 * d * d + d)  # ln_2, c_fc, c_proj
    n = layers * (attention + mlp) + ln  # + ln_f
    assert n == 100_096
    assert count_params(_gpt2()) == n
    assert count_params(_gpt2(), include_embeddings=True) == n + (VOCAB + 128) * d  # tied lm_head
    # 6 FLOPs per weight touched (incl. the tied logits matmul) + 12 * layers * seq_len * d_attn.
    expected = 6 * (n + d * VOCAB) + 12 * layers * seq_len * d
    assert expected == 1_181_184
    assert training_flops_per_token(_gpt2(), seq_len) == expected


def _embedding_params(model: torch.nn.Module) -> int:
    """Token/position tables, the vocabulary projection (if untied) and its bias, counted once each."""
    tables = {id(p): p for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    output = model.get_output_embeddings()
    tables.update({id(p): p for p in output.parameters()})
    tables.update(
        {id(p): p for name, p in model.named_parameters() if name.endswith(("mask_emb", "predictions.bias"))}
    )
    return sum(p.numel() for p in tables.values())


MODELS = [
    (_gpt2(), GPT2LMHeadModel),
    (_gpt2(tie_word_embeddings=False, n_inner=96), GPT2LMHeadModel),
    (_llama(num_key_value_heads=2, tie_word_embeddings=True), LlamaForCausalLM),
    (_llama(attention_bias=True, mlp_bias=True, tie_word_embeddings=False), LlamaForCausalLM),
    (BertConfig(**BERT_SHAPE), BertForMaskedLM),
    (RobertaConfig(**BERT_SHAPE), RobertaForMaskedLM),
    (_t5(num_decoder_layers=3), T5ForConditionalGeneration),
    (_t5(feed_forward_proj="gated-gelu", tie_word_embeddings=False), T5ForConditionalGeneration),
    (XLNetConfig(vocab_size=VOCAB, d_model=64, n_layer=2, n_head=4, d_inner=256), XLNetLMHeadModel),
]


@pytest.mark.parametrize("config,model_cls", MODELS, ids=lambda x: getattr(x, "model_type", ""))
def test_counts_match_instantiated_models(config, model_cls):
    model = model_cls(config)
    total = sum(p.numel() for p in model.parameters())
    assert count_params(config, include_embeddings=True) == total
    assert count_params(config) == total - _embedding_params(model)


def test_llama_flops_use_query_heads_for_attention_and_count_the_logits():
    config = MODELS[2][0]
    n = count_params(config)
    assert training_flops_per_token(config, 256) == 6 * (n + 64 * VOCAB) + 12 * 2 * 256 * 64


def test_attention_term_grows_linearly_with_sequence_length():
    config = _gpt2()
    per_position = training_flops_per_token(config, 2) - training_flops_per_token(config, 1)
    assert per_position == 12 * config.n_layer * config.n_embd
    assert training_flops_per_token(config, 512) - training_flops_per_token(config, 256) == 256 * per_position


def test_unknown_config_falls_back_to_six_times_all_trainable_params():
    config = MistralConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4
    )
    total = sum(p.numel() for p in MistralModel(config).parameters())
    assert count_params(config, include_embeddings=True) == total
    assert count_params(config) == total - VOCAB * 64
    assert training_flops_per_token(config, 128) == 6 * total


@pytest.mark.parametrize(
    "device_name,key",
    [
        ("NVIDIA H100 80GB HBM3", "h100"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
        ("NVIDIA H100 NVL", "h100-nvl"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA A100-SXM4-80GB", "a100"),
        ("NVIDIA A100 80GB PCIe", "a100"),
        ("NVIDIA A10G", "a10g"),
        ("NVIDIA A10", "a10"),
        ("NVIDIA L4", "l4"),
        ("NVIDIA L40S", "l40s"),
        ("Tesla V100-SXM2-16GB", "v100"),
        ("Tesla T4", "t4"),
        ("NVIDIA GeForce RTX 4090", "4090"),
        ("NVIDIA GeForce RTX 3090", "3090"),
    ],
)
def test_lookup_peak_flops_matches_torch_device_names(device_name, key):
    assert lookup_peak_flops(device_name) == PEAK_FLOPS[key]


def test_lookup_peak_flops_unknown_device_is_none():
    assert lookup_peak_flops("cpu") is None
    assert lookup_peak_flops("NVIDIA GeForce GTX 1080") is None


def test_peak_flops_are_dense_bf16_figures():
    assert PEAK_FLOPS["h100"] == pytest.approx(1979e12 / 2, rel=1e-3)  # datasheet quotes 2:4 sparsity
    assert PEAK_FLOPS["a100"] == 312e12
