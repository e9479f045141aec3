"""Model construction from transformers configs: size presets and family-specific config builders.

Every model starts from a stock transformers config (never downloaded weights, unless
`model.model_name_or_path` asks for them), so a saved run loads with stock `from_pretrained`.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PretrainedConfig

from pretrain.config import ConfigError
from pretrain.settings import ModelConfig


@dataclass(frozen=True)
class Preset:
    """Transformer shape: width (hidden_size), depth (num_layers), heads; MLP is 4x (GPT) or ~8/3x (Llama)."""

    hidden_size: int
    num_layers: int
    num_heads: int


# Shapes follow GPT-2 / GPT-3 (Brown et al. 2020, table 2.1) from 125m up; tiny/small are for CPU.
PRESETS: dict[str, Preset] = {
    "tiny": Preset(hidden_size=256, num_layers=4, num_heads=4),
    "small": Preset(hidden_size=512, num_layers=6, num_heads=8),
    "125m": Preset(hidden_size=768, num_layers=12, num_heads=12),
    "350m": Preset(hidden_size=1024, num_layers=24, num_heads=16),
    "760m": Preset(hidden_size=1536, num_layers=24, num_heads=16),
    "1b": Preset(hidden_size=2048, num_layers=24, num_heads=16),
}


def resolve_shape(cfg: ModelConfig) -> Preset:
    """The preset named by `cfg.preset`, with any non-zero width/depth/heads overrides applied."""
    if cfg.preset not in PRESETS:
        raise ConfigError(f"model.preset={cfg.preset!r} is unknown; choose one of {sorted(PRESETS)}")
    base = PRESETS[cfg.preset]
    shape = Preset(
        hidden_size=cfg.hidden_size or base.hidden_size,
        num_layers=cfg.num_layers or base.num_layers,
        num_heads=cfg.num_heads or base.num_heads,
    )
    if shape.hidden_size % shape.num_heads:
        raise ConfigError(
            f"model.hidden_size={shape.hidden_size} is not divisible by model.num_heads={shape.num_heads}; "
            "pick sizes that divide"
        )
    return shape


def llama_intermediate_size(hidden_size: int) -> int:
    """SwiGLU width: 8/3 of hidden, rounded up to a multiple of 64 (Touvron et al. 2023)."""
    return -(-int(8 * hidden_size / 3) // 64) * 64


def build_decoder_config(
    cfg: ModelConfig, vocab_size: int, max_positions: int, special_ids: dict[str, int]
) -> PretrainedConfig:
    """A GPT-2, Llama, OLMo 2 or Qwen3 config of the requested shape, token ids from the tokenizer.

    OLMo 2 (OLMo et al. 2024: QK-norm, norms after attention/MLP) and Qwen3 (QK-norm per head) are
    the stock transformers families with QK-norm (Dehghani et al. 2023), so their checkpoints load
    with AutoModelForCausalLM.
    """
    from transformers import GPT2Config, LlamaConfig, Olmo2Config, Qwen3Config

    shape = resolve_shape(cfg)
    common = {
        "vocab_size": vocab_size,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "bos_token_id": special_ids["bos"],
        "eos_token_id": special_ids["eos"],
        "pad_token_id": special_ids["pad"],
    }
    if cfg.family == "gpt2":
        return GPT2Config(
            n_positions=max_positions,
            n_embd=shape.hidden_size,
            n_layer=shape.num_layers,
            n_head=shape.num_heads,
            resid_pdrop=cfg.dropout,
            embd_pdrop=cfg.dropout,
            attn_pdrop=cfg.dropout,
            **common,
        )
    classes = {"llama": LlamaConfig, "olmo2": Olmo2Config, "qwen3": Qwen3Config}
    if cfg.family not in classes:
        raise ConfigError(
            f"model.family={cfg.family!r} is not a decoder-only family; use one of gpt2, {', '.join(classes)}"
        )
    extra = {"head_dim": shape.hidden_size // shape.num_heads} if cfg.family == "qwen3" else {}
    return classes[cfg.family](
        max_position_embeddings=max_positions,
        hidden_size=shape.hidden_size,
        intermediate_size=llama_intermediate_size(shape.hidden_size),
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_heads,
        attention_dropout=cfg.dropout,
        **extra,
        **common,
    )
