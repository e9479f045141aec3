"""T5 span corruption (Raffel et al. 2020): an encoder-decoder rebuilds the spans hidden behind sentinels.

Everything that makes this objective: T5 models from transformers' `T5Config` (T5 v1.1 shape:
gated-GELU feed-forward of 8/3 the width), sentinels <extra_id_0>, <extra_id_1>, ... in the trained
tokenizer, raw windows just long enough that the corrupted input fits data.seq_len
(pretrain.objectives.span_corruption), the loss summed over every target token (sentinels and EOS
included, as in T5) and metrics eval_loss, perplexity and token_accuracy over target tokens. No bits
per byte: the targets code only the corrupted 15% of the text, given the rest, so bytes of the
targets would not measure a compression of the text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForSeq2SeqLM, PreTrainedTokenizerBase, T5Config

from pretrain.config import ConfigError
from pretrain.data.tokenizer import special_ids
from pretrain.objectives.base import Batch, LossOutput, Objective, token_loss
from pretrain.objectives.models import llama_intermediate_size, resolve_shape
from pretrain.objectives.span_corruption import compute_input_and_target_lengths, corrupt_spans, span_counts


@dataclass(frozen=True)
class SpanCorruptionConfig:
    noise_density: float = 0.15
    """Fraction of raw tokens corrupted (T5, Raffel et al. 2020, sec. 3.1.4: 15%). Range (0, 1)."""
    mean_noise_span_length: float = 3.0
    """Mean length of a corrupted span, in tokens (T5 sec. 3.1.4: 3). Range [1, inf)."""
    num_sentinels: int = 100
    """Sentinel tokens <extra_id_0>... added to the trained tokenizer (T5's vocabulary has 100). Range [1, inf)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.noise_density < 1.0:
            raise ConfigError(f"objective.noise_density must be in (0, 1), got {self.noise_density}")
        if self.mean_noise_span_length < 1.0:
            raise ConfigError(
                f"objective.mean_noise_span_length must be >= 1 token, got {self.mean_noise_span_length}"
            )
        if self.num_sentinels < 1:
            raise ConfigError(f"objective.num_sentinels must be >= 1, got {self.num_sentinels}")


def sentinel_tokens(count: int) -> tuple[str, ...]:
    """T5's sentinel names: <extra_id_0>, <extra_id_1>, ..."""
    return tuple(f"<extra_id_{k}>" for k in range(count))


class SpanCorruption(Objective):
    """T5 span corruption on packed raw windows; inputs and targets have fixed lengths."""

    name = "t5"
    Config = SpanCorruptionConfig
    families = ("t5",)
    post_processor = "eos"  # text </s>: what T5's tokenizer gives `generate`, and how inputs end here
    language_model = False

    def __init__(self, cfg: Any, tokenizer: PreTrainedTokenizerBase) -> None:
        super().__init__(cfg, tokenizer)
        ocfg = cfg.objective
        if cfg.data.document_mask:
            raise ConfigError("data.document_mask=true is not supported by objective t5; drop it")
        if cfg.data.seq_len < 8:
            raise ConfigError(f"data.seq_len={cfg.data.seq_len} is too short for span corruption; use >= 8")
        if cfg.train.mixed_precision == "fp16":
            raise ConfigError(
                "T5 overflows in fp16 (transformers #14189, nanoT5); use --train.mixed_precision=bf16 or no"
            )
        self.tokens_length, self.targets_length = compute_input_and_target_lengths(
            cfg.data.seq_len, ocfg.noise_density, ocfg.mean_noise_span_length
        )
        self.sentinel_ids = torch.tensor(self._sentinel_ids(), dtype=torch.long)

    def _sentinel_ids(self) -> list[int]:
        """Ids of the sentinels one window needs, checked against the tokenizer."""
        ocfg = self.cfg.objective
        _, num_spans = span_counts(self.tokens_length, ocfg.noise_density, ocfg.mean_noise_span_length)
        vocab = self.tokenizer.get_vocab()
        missing = [s for s in sentinel_tokens(num_spans) if s not in vocab]
        if missing:
            raise ConfigError(
                f"a {self.tokens_length}-token window has {num_spans} noise spans but the tokenizer lacks "
                f"{missing[0]}; raise objective.num_sentinels or lower data.seq_len"
            )
        return [vocab[s] for s in sentinel_tokens(num_spans)]

    @classmethod
    def extra_special_tokens(cls, cfg: Any) -> tuple[str, ...]:
        return sentinel_tokens(cfg.objective.num_sentinels)

    # --- model -----------------------------------------------------------------------------
    def new_model(self) -> nn.Module:
        mcfg = self.cfg.model
        shape = resolve_shape(mcfg)
        ids = special_ids(self.tokenizer)
        config = T5Config(
            vocab_size=len(self.tokenizer),
            d_model=shape.hidden_size,
            d_kv=shape.hidden_size // shape.num_heads,
            # T5 v1.1 (gated-GELU): base has d_ff 2048 = 8/3 * d_model 768, as Llama's SwiGLU width.
            d_ff=llama_intermediate_size(shape.hidden_size),
            feed_forward_proj="gated-gelu",
            num_layers=shape.num_layers,
            num_heads=shape.num_heads,
            dropout_rate=mcfg.dropout,
            pad_token_id=ids["pad"],
            eos_token_id=ids["eos"],
            decoder_start_token_id=ids["pad"],  # T5 starts decoding from <pad>
        )
        return AutoModelForSeq2SeqLM.from_config(config, attn_implementation="sdpa")

    def load_model(self, path: str | Path) -> nn.Module:
        return AutoModelForSeq2SeqLM.from_pretrained(str(path), attn_implementation="sdpa")

    # --- data ------------------------------------------------------------------------------
    def block_len(self) -> int:
        """Raw tokens per window: the most whose corrupted input fits data.seq_len."""
        return self.tokens_length

    def collate(self, examples: list[dict[str, torch.Tensor]], generator: torch.Generator) -> Batch:
        tokens = torch.stack([e["input_ids"] for e in examples])  # (b, tokens_length)
        ocfg = self.cfg.objective
        input_ids, labels = corrupt_spans(
            tokens,
            ocfg.noise_density,
            ocfg.mean_noise_span_length,
            self.sentinel_ids,
            self.tokenizer.eos_token_id,
            generator,
        )  # (b, <= seq_len), (b, targets_length)
        # Teacher forcing: the decoder reads the targets shifted right behind <pad> (T5's _shift_right).
        start = torch.full_like(labels[:, :1], self.tokenizer.pad_token_id)
        decoder_input_ids = torch.cat([start, labels[:, :-1]], dim=1)
        return {"input_ids": input_ids, "decoder_input_ids": decoder_input_ids, "labels": labels}

    # --- loss and metrics ------------------------------------------------------------------
    def count_targets(self, batch: Batch) -> int:
        return int((batch["labels"] != -100).sum())

    def compute_loss(self, model: nn.Module, batch: Batch) -> LossOutput:
        logits = model(input_ids=batch["input_ids"], decoder_input_ids=batch["decoder_input_ids"]).logits
        return token_loss(logits, batch["labels"], self.token_bytes)  # logits (b, targets_length, v)

    def finalize_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        """eval_loss and perplexity over target tokens, and token_accuracy (argmax == target)."""
        metrics = super().finalize_metrics(sums)
        metrics["token_accuracy"] = metrics.pop("accuracy")
        return metrics
