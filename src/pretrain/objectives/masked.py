"""Masked language modelling (BERT / RoBERTa): predict the 15% of tokens that were corrupted 80/10/10.

Everything that makes this objective: BERT or RoBERTa encoders from a config, packed blocks opened by
<s> (as fairseq's RoBERTa does), BERT's token corruption (pretrain.objectives.masking, optionally whole
words), the optional sentence-pair task (BERT's next-sentence or ALBERT's sentence-order prediction,
with `BertForPreTraining`'s heads), bidirectional document masking, and the loss summed over masked
tokens only. Metrics: eval_loss, perplexity over masked tokens and mlm_accuracy; bits per byte is not
reported (a masked LM does not code the whole text).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import datasets
import torch
from accelerate import Accelerator
from tokenizers import AddedToken
from torch import nn
from transformers import (
    AutoModelForMaskedLM,
    AutoModelForPreTraining,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)

from pretrain.config import ConfigError
from pretrain.data.packing import PackedBlocks
from pretrain.data.tokenizer import special_ids
from pretrain.objectives.base import Batch, LossOutput, Objective, token_loss
from pretrain.objectives.causal import document_mask_inputs
from pretrain.objectives.masking import build_masker
from pretrain.objectives.models import resolve_shape
from pretrain.settings import ModelConfig


@dataclass(frozen=True)
class MaskedLMConfig:
    mlm_probability: float = 0.15
    """Fraction of non-special tokens selected for prediction (BERT, Devlin et al. 2019, sec. 3.1: 15%). Range (0, 1]."""
    mask_replace_prob: float = 0.8
    """Fraction of selected tokens replaced by <mask> (BERT sec. 3.1: 80%). Range [0, 1]."""
    random_replace_prob: float = 0.1
    """Fraction of selected tokens replaced by a random non-special token (BERT: 10%); the rest stay as they are. Range [0, 1]."""
    whole_word_mask: bool = False
    """Select whole words (every sub-token of a word together), as in BERT's whole-word-masking models."""
    sentence_task: Literal["none", "nsp", "sop"] = "none"
    """Sentence-pair task: nsp (BERT next-sentence prediction), sop (ALBERT sentence-order prediction,
    Lan et al. 2020) or none (RoBERTa, Liu et al. 2019, found NSP does not help); nsp/sop need model.family=bert."""

    def __post_init__(self) -> None:
        for name in ("mlm_probability", "mask_replace_prob", "random_replace_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"objective.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.mask_replace_prob + self.random_replace_prob > 1.0:
            raise ConfigError(
                "objective.mask_replace_prob + objective.random_replace_prob must not exceed 1, got "
                f"{self.mask_replace_prob} + {self.random_replace_prob}"
            )


class MaskedLM(Objective):
    """BERT/RoBERTa masked-token prediction on packed blocks, optionally with NSP or SOP."""

    name = "masked"
    Config = MaskedLMConfig
    families = ("bert", "roberta")
    post_processor = "roberta"  # <s> text </s>, trimmed offsets: what stock fill-mask pipelines feed
    language_model = False

    def __init__(self, cfg: Any, tokenizer: PreTrainedTokenizerBase) -> None:
        super().__init__(cfg, tokenizer)
        self.task = cfg.objective.sentence_task
        if self.task != "none" and cfg.data.document_mask:
            raise ConfigError(
                f"objective.sentence_task={self.task} needs attention between its two segments, which "
                "data.document_mask=true forbids; use one or the other"
            )
        self.masker = build_masker(tokenizer, cfg.objective)
        # RoBERTa's <mask> absorbs the space before it, so "a <mask> b" stands for a whole " word" token
        # as in training (else a stray "Ġ" precedes the mask); the id stays the same.
        tokenizer.add_special_tokens(
            {"mask_token": AddedToken(tokenizer.mask_token, lstrip=True, special=True)}
        )

    # --- model -----------------------------------------------------------------------------
    def new_model(self) -> nn.Module:
        mcfg = self.cfg.model
        if self.task != "none" and mcfg.family != "bert":
            raise ConfigError(
                f"objective.sentence_task={self.task} uses BertForPreTraining's heads; set model.family=bert"
            )
        config = build_encoder_config(
            mcfg, len(self.tokenizer), self.cfg.data.seq_len, special_ids(self.tokenizer)
        )
        auto = AutoModelForPreTraining if self.task != "none" else AutoModelForMaskedLM
        return auto.from_config(config, attn_implementation="sdpa")

    def load_model(self, path: str | Path) -> nn.Module:
        auto = AutoModelForPreTraining if self.task != "none" else AutoModelForMaskedLM
        model = auto.from_pretrained(str(path), attn_implementation="sdpa")
        if model.config.model_type != self.cfg.model.family:
            raise ConfigError(
                f"{path} holds a {model.config.model_type} model; set model.family={model.config.model_type}"
            )
        return model

    # --- data ------------------------------------------------------------------------------
    def block_len(self) -> int:
        """Text tokens per block: seq_len less <s> (and two </s> separators for sentence pairs)."""
        return self.cfg.data.seq_len - (3 if self.task != "none" else 1)

    def build_dataset(self, raw: datasets.Dataset, accelerator: Accelerator) -> PackedBlocks | PairedBlocks:
        blocks = super().build_dataset(raw, accelerator)
        return PairedBlocks(blocks) if self.task == "nsp" else blocks

    def collate(self, examples: list[dict[str, torch.Tensor]], generator: torch.Generator) -> Batch:
        blocks = torch.stack([e["input_ids"] for e in examples])  # (b, block_len)
        tok = self.tokenizer
        if self.task == "none":
            bos = torch.full_like(blocks[:, :1], tok.bos_token_id)
            input_ids = torch.cat([bos, blocks], dim=1)  # (b, seq_len)
            batch = self._document_inputs(input_ids) if self.cfg.data.document_mask else {}
        else:
            others = torch.stack([e["other_ids"] for e in examples]) if self.task == "nsp" else None
            input_ids, token_type_ids, sentence_labels = build_sentence_pairs(
                blocks, others, tok.bos_token_id, tok.eos_token_id, generator
            )
            batch = {"token_type_ids": token_type_ids, "sentence_labels": sentence_labels}
        batch["input_ids"], batch["labels"] = self.masker(input_ids, generator)
        return batch

    def _document_inputs(self, input_ids: torch.Tensor) -> Batch:
        """Positions restarting per document and a bidirectional mask that stays inside documents."""
        inputs = document_mask_inputs(input_ids, self.tokenizer.eos_token_id, causal=False)
        if self.cfg.model.family == "roberta":  # RoBERTa numbers positions from padding_idx + 1
            inputs["position_ids"] = inputs["position_ids"] + self.tokenizer.pad_token_id + 1
        return inputs

    # --- loss and metrics ------------------------------------------------------------------
    def count_targets(self, batch: Batch) -> int:
        return int((batch["labels"] != -100).sum())

    def compute_loss(self, model: nn.Module, batch: Batch) -> LossOutput:
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "sentence_labels")}
        out = model(**inputs)
        labels = batch["labels"]
        selected = labels != -100  # (b, t)
        logits = out.prediction_logits if self.task != "none" else out.logits  # (b, t, v)
        mlm = token_loss(logits[selected], labels[selected], self.token_bytes)
        stats = {"correct": mlm.stats["correct"], "mlm_loss_sum": mlm.loss_sum.detach()}
        if self.task == "none":
            return LossOutput(mlm.loss_sum, mlm.num_targets, stats)
        pair_logits = out.seq_relationship_logits.float()  # (b, 2)
        pair_loss = nn.functional.cross_entropy(pair_logits, batch["sentence_labels"], reduction="none")
        # Each sequence's pair loss weighs as many masked tokens as it has, so loss_sum / num_targets is
        # the mean MLM loss plus a (masked-token weighted) mean pair loss, BERT's sum of the two means,
        # and it stays a plain sum under gradient accumulation.
        loss_sum = mlm.loss_sum + (selected.sum(1) * pair_loss).sum()
        with torch.no_grad():
            stats["sentence_loss_sum"] = pair_loss.sum()
            stats["sentence_correct"] = (pair_logits.argmax(-1) == batch["sentence_labels"]).sum()
            stats["sentences"] = torch.tensor(float(len(pair_loss)), device=pair_loss.device)
        return LossOutput(loss_sum, mlm.num_targets, stats)

    def finalize_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        """eval_loss (the training loss), perplexity over masked tokens, mlm_accuracy (+ pair task)."""
        targets = max(sums["num_targets"], 1.0)
        mlm_loss = sums["mlm_loss_sum"] / targets
        metrics = {
            "eval_loss": sums["loss_sum"] / targets,
            "perplexity": math.exp(min(mlm_loss, 700.0)),
            "mlm_accuracy": sums["correct"] / targets,
        }
        if self.task != "none":
            sentences = max(sums["sentences"], 1.0)
            metrics["mlm_loss"] = mlm_loss
            metrics[f"{self.task}_loss"] = sums["sentence_loss_sum"] / sentences
            metrics[f"{self.task}_accuracy"] = sums["sentence_correct"] / sentences
        return metrics


@dataclass(frozen=True)
class PairedBlocks:
    """Packed blocks, each served with the block half the corpus away ("other_ids"): NSP's random
    second segment then comes from a different document, however small the batch."""

    blocks: PackedBlocks

    @property
    def efficiency(self) -> float:
        return self.blocks.efficiency

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        other = self.blocks[(i + len(self.blocks) // 2) % len(self.blocks)]["input_ids"]
        return {**self.blocks[i], "other_ids": other}


def build_sentence_pairs(
    blocks: torch.Tensor, others: torch.Tensor | None, bos_id: int, eos_id: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """<s> A </s> B </s> from (b, n) blocks cut at a random point; returns ids and token types
    (b, n + 3) and pair labels (b,).

    Half the pairs are changed and labelled 1 (BERT and ALBERT both use 50%): with `others` (NSP), B is
    the same span of another block (a random next segment); without (SOP), A and B swap places.
    Segments are spans of packed text, so one may cross a document boundary.
    """
    b, n = blocks.shape
    split = torch.randint(1, n, (b, 1), generator=generator)  # length of A in the original text
    changed = torch.rand(b, 1, generator=generator) < 0.5
    zero = torch.zeros_like(split)
    if others is None:  # SOP: the first segment is B = blocks[split:], the second A = blocks[:split]
        source = blocks
        first_len = torch.where(changed, n - split, split)
        first_start, second_start = torch.where(changed, split, zero), torch.where(changed, zero, split)
    else:  # NSP: B comes from `others`, found after the blocks in `source`
        source = torch.cat([blocks, others], dim=1)
        first_len, first_start = split, zero
        second_start = torch.where(changed, n + split, split)
    j = torch.arange(n + 3)  # output positions
    in_second = j >= first_len + 2  # (b, n + 3), includes the final </s>
    index = torch.where(in_second, second_start + j - first_len - 2, first_start + j - 1)
    ids = source.gather(1, index.clamp(0, source.shape[1] - 1))
    ids = torch.where(j == 0, bos_id, ids)
    ids = torch.where((j == first_len + 1) | (j == n + 2), eos_id, ids)
    return ids, in_second.long(), changed.long().squeeze(1)


def build_encoder_config(
    cfg: ModelConfig, vocab_size: int, seq_len: int, special: dict[str, int]
) -> PretrainedConfig:
    """A BERT or RoBERTa config of the requested shape (MLP 4x wide, as in BERT) for `seq_len` tokens."""
    from transformers import BertConfig, RobertaConfig

    shape = resolve_shape(cfg)
    common = {
        "vocab_size": vocab_size,
        "hidden_size": shape.hidden_size,
        "num_hidden_layers": shape.num_layers,
        "num_attention_heads": shape.num_heads,
        "intermediate_size": 4 * shape.hidden_size,
        "hidden_dropout_prob": cfg.dropout,
        "attention_probs_dropout_prob": cfg.dropout,
        "pad_token_id": special["pad"],
        "bos_token_id": special["bos"],
        "eos_token_id": special["eos"],
    }
    positions = cfg.max_position_embeddings or seq_len
    if cfg.family == "roberta":
        # RoBERTa's positions start after padding_idx (514 rows for 512 tokens in roberta-base).
        return RobertaConfig(
            max_position_embeddings=positions + special["pad"] + 1, type_vocab_size=1, **common
        )
    return BertConfig(max_position_embeddings=positions, type_vocab_size=2, **common)
