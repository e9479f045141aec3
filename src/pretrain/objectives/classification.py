"""Sequence classification (and regression) fine-tuning: the objective `pretrain probe` trains.

Not a pretraining objective: it fine-tunes a stock `AutoModelForSequenceClassification` (BERT/RoBERTa
classification head, XLNet's summary head, T5's encoder-decoder head, GPT-2's last-token head) on
labelled text, through the same trainer as pretraining. Rows are one text (or a text pair) each, padded
per batch; the loss is cross-entropy summed over rows (mean squared error for a regression label),
so the trainer's per-target normalisation is the usual mean over examples.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedTokenizerBase

from pretrain.objectives.base import Batch, LossOutput, Objective


class SequenceClassification(Objective):
    """A classification head on a saved model (`pretrained=True`) or on the same architecture from scratch."""

    name = "classification"
    language_model = False
    fixed_length_rows = False

    def __init__(
        self,
        cfg: Any,
        tokenizer: PreTrainedTokenizerBase,
        model_dir: str | Path,
        num_labels: int,
        max_length: int,
        pretrained: bool = True,
    ) -> None:
        super().__init__(cfg, tokenizer)
        self.model_dir, self.num_labels, self.max_length = str(model_dir), num_labels, max_length
        self.pretrained = pretrained

    # --- model -----------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        config = AutoConfig.from_pretrained(self.model_dir, num_labels=self.num_labels)
        config.pad_token_id = self.tokenizer.pad_token_id  # GPT-2's head finds the last non-pad token
        if self.num_labels == 1:
            config.problem_type = "regression"
        if self.pretrained:  # the encoder's weights; only the head starts fresh
            return AutoModelForSequenceClassification.from_pretrained(self.model_dir, config=config)
        return AutoModelForSequenceClassification.from_config(config)

    def load_model(self, path: str | Path) -> nn.Module:
        return AutoModelForSequenceClassification.from_pretrained(str(path))

    # --- data ------------------------------------------------------------------------------
    def block_len(self) -> int:
        return self.max_length

    def encode(
        self, texts: Sequence[str], pairs: Sequence[str] | None, labels: Sequence[float]
    ) -> list[dict]:
        """Tokenized rows (truncated to max_length, the tokenizer's special tokens added) with their label."""
        encoded = self.tokenizer(
            list(texts),
            list(pairs) if pairs is not None else None,
            truncation=True,
            max_length=self.max_length,
        )
        dtype = torch.float32 if self.num_labels == 1 else torch.long
        return [
            {"input_ids": torch.tensor(ids), "label": torch.tensor(label, dtype=dtype)}
            for ids, label in zip(encoded["input_ids"], labels, strict=True)
        ]

    def collate(self, examples: list[dict[str, torch.Tensor]], generator: torch.Generator) -> Batch:
        longest = max(len(e["input_ids"]) for e in examples)
        input_ids = torch.full((len(examples), longest), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for i, e in enumerate(examples):
            input_ids[i, : len(e["input_ids"])] = e["input_ids"]
            attention_mask[i, : len(e["input_ids"])] = 1
        labels = torch.stack([e["label"] for e in examples])
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    # --- loss and metrics ------------------------------------------------------------------
    def count_targets(self, batch: Batch) -> int:
        return int(batch["labels"].shape[0])

    def count_tokens(self, batch: Batch) -> int:
        return int(batch["attention_mask"].sum())

    def predict(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Logits (b, num_labels), or (b,) predicted values for regression."""
        # T5's head shifts input_ids into the decoder itself and reads the state at the </s>.
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model(**inputs).logits
        return logits.squeeze(-1) if self.num_labels == 1 else logits

    def compute_loss(self, model: nn.Module, batch: Batch) -> LossOutput:
        outputs, labels = self.predict(model, batch), batch["labels"]
        count = torch.tensor(labels.shape[0], device=labels.device)
        if self.num_labels == 1:
            loss_sum = nn.functional.mse_loss(outputs.float(), labels, reduction="sum")
            return LossOutput(loss_sum=loss_sum, num_targets=count)
        loss_sum = nn.functional.cross_entropy(outputs.float(), labels, reduction="sum")
        correct = (outputs.argmax(-1) == labels).sum().detach()
        return LossOutput(loss_sum=loss_sum, num_targets=count, stats={"correct": correct})
