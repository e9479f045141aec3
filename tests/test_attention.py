"""Attention implementations and packed documents: eager is refused with packed/prefix masks; the
position_ids-only inputs that flash-attention varlen and flex attention get give the same logits as
the dense document mask where both run (sdpa on CPU); grouped-query attention and Llama 3 presets."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from pretrain.config import ConfigError, parse_config
from pretrain.objectives.attention import check_attention, packed_causal_inputs
from pretrain.objectives.models import build_decoder_config, resolve_shape
from pretrain.scaling.flops import training_flops_per_token
from pretrain.settings import ModelConfig, make_run_config

EOS = 1
IDS = {"bos": 0, "eos": EOS, "pad": 2}


def packed_rows() -> torch.Tensor:
    """Two rows of several documents each (EOS ends a document), incl. a one-token document."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 300, (2, 48), generator=g)
    ids[0, [10, 30]] = EOS
    ids[1, [5, 6, 40]] = EOS
    return ids


def decoder(family: str, **shape: int) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(family=family, preset="tiny", hidden_size=64, num_layers=2, num_heads=4, **shape)
    return AutoModelForCausalLM.from_config(
        build_decoder_config(cfg, 300, 64, IDS), attn_implementation="sdpa"
    ).eval()


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_position_ids_path_logits_equal_the_dense_mask_path(family):
    model, ids = decoder(family), packed_rows()
    dense_inputs = packed_causal_inputs(ids, EOS, "sdpa")
    varlen_inputs = packed_causal_inputs(ids, EOS, "flash_attention_2")
    assert dense_inputs["attention_mask"].shape == (2, 1, 48, 48) and "attention_mask" not in varlen_inputs
    assert torch.equal(dense_inputs["position_ids"], varlen_inputs["position_ids"])
    with torch.no_grad():
        dense = model(input_ids=ids, use_cache=False, **dense_inputs).logits
        varlen = model(input_ids=ids, use_cache=False, **varlen_inputs).logits
        unmasked = model(input_ids=ids, use_cache=False).logits
    torch.testing.assert_close(varlen, dense, rtol=1e-5, atol=1e-5)
    # Not vacuous: without per-document masking the later documents' logits change.
    assert (unmasked - dense).abs().amax() > 1e-2
    torch.testing.assert_close(unmasked[0, :11], dense[0, :11], rtol=1e-5, atol=1e-5)  # first document agrees


def test_eager_is_refused_with_packed_or_prefix_masks_in_one_line():
    assert check_attention("eager", None, "llama") == "eager"  # plain causal: no boolean mask to ignore
    for masks in ("document", "prefix"):
        with pytest.raises(ConfigError, match="eager adds boolean masks as numbers") as err:
            check_attention("eager", masks, "gpt2")
        assert "\n" not in str(err.value) and "use model.attn_implementation=sdpa" in str(err.value)
    with pytest.raises(ConfigError, match="prefix LM"):
        check_attention("flex_attention", "prefix", "llama")
    with pytest.raises(ConfigError, match="no flex attention for gpt2"):
        check_attention("flex_attention", "document", "gpt2")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="flash_attention_2 needs a CUDA device"):
            check_attention("flash_attention_2", "document", "llama")


@pytest.mark.parametrize("objective", ["causal", "prefix_lm"])
def test_objectives_refuse_eager_before_building_a_model(objective):
    from pretrain.objectives import get_objective

    cls = get_objective(objective)
    argv = ["--model.attn_implementation=eager", "--data.document_mask=true"]
    cfg = parse_config(make_run_config(cls.Config), argv)
    obj = cls.__new__(cls)  # the check reads only the config: no tokenizer needed
    obj.cfg = cfg
    with pytest.raises(ConfigError, match="eager"):
        obj.attention()
    cfg = parse_config(make_run_config(cls.Config), ["--model.attn_implementation=eager"])
    obj.cfg = cfg
    if objective == "causal":
        assert obj.attention() == "eager"
    else:
        with pytest.raises(ConfigError, match="eager"):
            obj.attention()


def test_grouped_query_attention_and_llama3_presets():
    one_b = build_decoder_config(ModelConfig(family="llama", preset="llama3-1b"), 128256, 2048, IDS)
    assert (one_b.hidden_size, one_b.num_hidden_layers, one_b.num_attention_heads) == (2048, 16, 32)
    assert (one_b.num_key_value_heads, one_b.intermediate_size, one_b.tie_word_embeddings) == (8, 8192, True)
    eight_b = build_decoder_config(ModelConfig(family="llama", preset="llama3-8b"), 128256, 8192, IDS)
    assert (eight_b.hidden_size, eight_b.num_hidden_layers, eight_b.num_key_value_heads) == (4096, 32, 8)
    assert (eight_b.intermediate_size, eight_b.tie_word_embeddings) == (14336, False)
    three_b = resolve_shape(ModelConfig(family="llama", preset="llama3-3b"))
    assert (three_b.hidden_size, three_b.num_layers, three_b.num_heads, three_b.num_kv_heads) == (
        3072,
        28,
        24,
        8,
    )
    gqa, mha = decoder("llama", num_kv_heads=2), decoder("llama")
    attn = gqa.model.layers[0].self_attn
    assert attn.k_proj.out_features == attn.v_proj.out_features == 2 * 16  # 2 kv heads x head_dim 16
    assert mha.model.layers[0].self_attn.k_proj.out_features == 64
    # Fewer key/value weights, fewer FLOPs per token (attention scores keep their cost).
    assert training_flops_per_token(gqa.config, 64) < training_flops_per_token(mha.config, 64)
    ids = packed_rows()
    gqa.train()
    loss = gqa(input_ids=ids, labels=ids, use_cache=False).loss
    loss.backward()
    assert torch.isfinite(loss) and attn.k_proj.weight.grad.abs().sum() > 0


def test_grouped_query_attention_settings_are_checked():
    with pytest.raises(ConfigError, match="does not divide the 4 attention heads"):
        resolve_shape(ModelConfig(family="llama", num_heads=4, num_kv_heads=3))
    with pytest.raises(ConfigError, match="need model.family=llama"):
        resolve_shape(ModelConfig(family="gpt2", num_kv_heads=2))
    with pytest.raises(ConfigError, match="need model.family=llama"):
        resolve_shape(ModelConfig(family="gpt2", preset="llama3-1b"))
    with pytest.raises(ConfigError, match="num_kv_heads must be >= 0"):
        ModelConfig(num_kv_heads=-1)
    with pytest.raises(ConfigError, match="loss_chunk_tokens must be in"):
        ModelConfig(loss_chunk_tokens=0)


def test_objectives_that_pin_sdpa_refuse_another_attention_implementation():
    from pretrain.objectives import get_objective

    cls = get_objective("masked")
    cfg = parse_config(make_run_config(cls.Config), ["--model.attn_implementation=flex_attention"])
    obj = cls.__new__(cls)
    obj.cfg = cfg
    with pytest.raises(ConfigError, match="applies to the decoder objectives"):
        obj.build_model()
