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
    num_kv_heads: int = 0  # grouped-query attention (llama); 0 = num_heads
    intermediate_size: int = 0  # MLP width; 0 = 4x (GPT-2) or llama_intermediate_size
    tie_word_embeddings: bool = True


# Shapes follow GPT-2 / GPT-3 (Brown et al. 2020, table 2.1) from 125m up; tiny/small are for CPU.
PRESETS: dict[str, Preset] = {
    "tiny": Preset(hidden_size=256, num_layers=4, num_heads=4),
    "small": Preset(hidden_size=512, num_layers=6, num_heads=8),
    "125m": Preset(hidden_size=768, num_layers=12, num_heads=12),
    "350m": Preset(hidden_size=1024, num_layers=24, num_heads=16),
    "760m": Preset(hidden_size=1536, num_layers=24, num_heads=16),
    "1b": Preset(hidden_size=2048, num_layers=24, num_heads=16),
    # Llama 3 shapes (meta-llama Llama-3.2-1B, Llama-3.2-3B, Llama-3.1-8B config.json): GQA with 8
    # key/value heads; the 8B does not tie its embeddings. Llama family only.
    "llama3-1b": Preset(2048, 16, 32, num_kv_heads=8, intermediate_size=8192),
    "llama3-3b": Preset(3072, 28, 24, num_kv_heads=8, intermediate_size=8192),
    "llama3-8b": Preset(4096, 32, 32, num_kv_heads=8, intermediate_size=14336, tie_word_embeddings=False),
}


def resolve_shape(cfg: ModelConfig) -> Preset:
    """The preset named by `cfg.preset`, with any non-zero width/depth/heads overrides applied."""
    if cfg.preset not in PRESETS:
        raise ConfigError(f"model.preset={cfg.preset!r} is unknown; choose one of {sorted(PRESETS)}")
    base = PRESETS[cfg.preset]
    heads = cfg.num_heads or base.num_heads
    shape = Preset(
        hidden_size=cfg.hidden_size or base.hidden_size,
        num_layers=cfg.num_layers or base.num_layers,
        num_heads=heads,
        num_kv_heads=cfg.num_kv_heads or (base.num_kv_heads if not cfg.num_heads else 0) or heads,
        intermediate_size=base.intermediate_size if not cfg.hidden_size else 0,
        tie_word_embeddings=base.tie_word_embeddings,
    )
    if shape.hidden_size % shape.num_heads:
        raise ConfigError(
            f"model.hidden_size={shape.hidden_size} is not divisible by model.num_heads={shape.num_heads}; "
            "pick sizes that divide"
        )
    if shape.num_heads % shape.num_kv_heads:
        raise ConfigError(
            f"model.num_kv_heads={shape.num_kv_heads} does not divide the {shape.num_heads} attention heads; "
            "pick a divisor (grouped-query attention shares each key/value head among equal groups)"
        )
    if cfg.family != "llama" and (shape.num_kv_heads != shape.num_heads or cfg.preset.startswith("llama")):
        raise ConfigError(
            f"model.preset={cfg.preset} / model.num_kv_heads={shape.num_kv_heads}: grouped-query attention and "
            f"the Llama 3 presets need model.family=llama (got {cfg.family})"
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
    ids = {
        "bos_token_id": special_ids["bos"],
        "eos_token_id": special_ids["eos"],
        "pad_token_id": special_ids["pad"],
    }
    if cfg.family == "gpt2":
        return GPT2Config(
            vocab_size=vocab_size,
            n_positions=max_positions,
            n_embd=shape.hidden_size,
            n_layer=shape.num_layers,
            n_head=shape.num_heads,
            resid_pdrop=cfg.dropout,
            embd_pdrop=cfg.dropout,
            attn_pdrop=cfg.dropout,
            tie_word_embeddings=cfg.tie_word_embeddings,
            **ids,
        )
    classes = {"llama": LlamaConfig, "olmo2": Olmo2Config, "qwen3": Qwen3Config}
    if cfg.family in classes:
        extra = {"head_dim": shape.hidden_size // shape.num_heads} if cfg.family == "qwen3" else {}
        return classes[cfg.family](
            vocab_size=vocab_size,
            max_position_embeddings=max_positions,
            hidden_size=shape.hidden_size,
            intermediate_size=shape.intermediate_size or llama_intermediate_size(shape.hidden_size),
            num_hidden_layers=shape.num_layers,
            num_attention_heads=shape.num_heads,
            num_key_value_heads=shape.num_kv_heads,
            attention_dropout=cfg.dropout,
            tie_word_embeddings=shape.tie_word_embeddings and cfg.tie_word_embeddings,
            **extra,
            **ids,
        )
    raise ConfigError(
        f"model.family={cfg.family!r} is not a decoder-only family; use one of gpt2, {', '.join(classes)}"
    )
