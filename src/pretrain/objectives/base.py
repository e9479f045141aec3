"""What an objective is: the one value that makes the shared runner train GPT, BERT, T5, ...

An `Objective` subclass bundles everything that differs between objectives (in the spirit of
torchtitan's TrainSpec): its config section, extra special tokens, model factory, datasets,
collator, loss and metrics. The trainer and the evaluation harness never branch on its name.

Losses are *sums* with a target count (`LossOutput`); the trainer divides by the number of targets
across all micro-steps and ranks of an optimizer step, which is what makes token-level objectives
(MLM, T5, prefix LM) exact under gradient accumulation and data parallelism.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import datasets
import torch
from accelerate import Accelerator
from torch import nn
from transformers import PreTrainedTokenizerBase

from pretrain.config import ConfigError
from pretrain.data.mixture import MixtureBlocks, SourceSets
from pretrain.data.packing import PackedBlocks, pack_blocks, token_stream, tokenize_dataset
from pretrain.data.shard_set import ShardBlocks, ShardSet
from pretrain.data.streaming import StreamBlocks
from pretrain.data.tokenizer import compute_token_bytes
from pretrain.settings import NoObjectiveConfig

Batch = dict[str, torch.Tensor]


@dataclass
class LossOutput:
    """A micro-batch's summed loss, the number of targets it sums over, and summed eval statistics."""

    loss_sum: torch.Tensor
    num_targets: torch.Tensor
    stats: dict[str, torch.Tensor] = field(default_factory=dict)
    # Evaluation only: each target's token id (n,) and loss in nats (n,), for loss by token frequency.
    target_ids: torch.Tensor | None = None
    target_losses: torch.Tensor | None = None
    # Training only: a weighted regulariser summed over the same targets (z-loss), not part of loss_sum.
    aux_sum: torch.Tensor | None = None

    def training_loss(self) -> torch.Tensor:
        """What the backward pass differentiates: the summed loss plus the regulariser, if any."""
        return self.loss_sum if self.aux_sum is None else self.loss_sum + self.aux_sum

    def logged(self) -> torch.Tensor:
        """(2,) float64, detached: [summed loss, summed regulariser] for the trainer's step totals."""
        aux = self.aux_sum if self.aux_sum is not None else torch.zeros_like(self.loss_sum)
        return torch.stack([self.loss_sum.detach(), aux.detach()]).double()


class Objective:
    """Base class of objectives. Subclasses set the class attributes and override the hooks."""

    name: ClassVar[str] = ""
    Config: ClassVar[type] = NoObjectiveConfig
    families: ClassVar[tuple[str, ...]] = ()
    post_processor: ClassVar[str] = "none"  # see pretrain.data.tokenizer.set_post_processor
    language_model: ClassVar[bool] = True  # report bits_per_byte
    fixed_length_rows: ClassVar[bool] = True  # rows are block_len() tokens; else count_tokens() counts
    pipeline_inputs_only: ClassVar[bool] = False  # batches hold only input_ids + labels (pipeline parallel)
    attention_choice: ClassVar[bool] = False  # honours model.attn_implementation (else always sdpa)

    def __init__(self, cfg: Any, tokenizer: PreTrainedTokenizerBase) -> None:
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.token_bytes = torch.from_numpy(compute_token_bytes(tokenizer))

    @classmethod
    def extra_special_tokens(cls, cfg: Any) -> tuple[str, ...]:
        """Special tokens this objective needs beyond <s> <pad> </s> <unk> <mask>."""
        return ()

    # --- model -----------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        """Pretrained weights when `model.model_name_or_path` is set, else a fresh model from config."""
        mcfg = self.cfg.model
        if mcfg.attn_implementation != "sdpa" and not self.attention_choice:
            raise ConfigError(
                f"model.attn_implementation={mcfg.attn_implementation} applies to the decoder objectives "
                f"(causal, prefix_lm); objective {self.name} runs sdpa: drop the key"
            )
        if mcfg.model_name_or_path:
            return self.load_model(mcfg.model_name_or_path)
        if mcfg.family not in self.families:
            raise ConfigError(
                f"model.family={mcfg.family!r} cannot train objective {self.name}; use one of {self.families}"
            )
        return self.new_model()

    def new_model(self) -> nn.Module:
        """A randomly initialised model of `model.family` / `model.preset` for this objective."""
        raise NotImplementedError

    def load_model(self, path: str | Path) -> nn.Module:
        """Load a saved model of this objective (for `pretrain eval`)."""
        raise NotImplementedError

    def save_model(self, model: nn.Module, output_dir: str | Path, state_dict: dict | None = None) -> None:
        """Write the model in stock Hugging Face format (config.json, model.safetensors, tokenizer)."""
        model.save_pretrained(str(output_dir), state_dict=state_dict)
        self.tokenizer.save_pretrained(str(output_dir))

    # --- data ------------------------------------------------------------------------------
    def block_len(self) -> int:
        """Tokens per packed block; objectives that add tokens (T5, BERT) override this."""
        return self.cfg.data.seq_len

    def build_dataset(
        self, raw: datasets.Dataset | ShardSet | SourceSets, accelerator: Accelerator
    ) -> PackedBlocks | ShardBlocks | MixtureBlocks:
        """Tokenize (cached, main process first) and pack into fixed blocks; shards are already
        tokenized: their blocks are slices of the memory-mapped stream."""
        if isinstance(raw, ShardSet):
            return ShardBlocks(raw, self.block_len())
        if isinstance(raw, SourceSets):
            return MixtureBlocks(raw, self.block_len())
        if isinstance(raw, datasets.IterableDataset):  # data.streaming: packed on the fly while training
            return StreamBlocks(raw, self.tokenizer, self.block_len(), self.cfg.data.special_tokens_in_text)
        with accelerator.main_process_first():
            data = self.cfg.data
            tokenized = tokenize_dataset(
                raw,
                self.tokenizer,
                num_proc=data.num_proc,
                special_tokens_in_text=data.special_tokens_in_text,
            )
        blocks = pack_blocks(token_stream(tokenized), self.block_len())
        cache_files = tuple(f["filename"] for f in tokenized.cache_files)
        return dataclasses.replace(blocks, cache_files=cache_files, fingerprint=tokenized._fingerprint)

    def collate(self, examples: list[dict[str, torch.Tensor]], generator: torch.Generator) -> Batch:
        """Turn dataset items into a model batch; all randomness comes from `generator`."""
        raise NotImplementedError

    # --- loss and metrics ------------------------------------------------------------------
    def count_targets(self, batch: Batch) -> int:
        """Targets in a batch, known before the forward pass (for loss normalisation)."""
        raise NotImplementedError

    def count_tokens(self, batch: Batch) -> int:
        """Tokens the model reads in a training batch; only called when fixed_length_rows is False."""
        raise NotImplementedError

    def compute_loss(self, model: nn.Module, batch: Batch) -> LossOutput:
        raise NotImplementedError

    def finalize_metrics(self, sums: dict[str, float]) -> dict[str, float]:
        """Metrics from summed statistics over the evaluation set."""
        eval_loss = sums["loss_sum"] / max(sums["num_targets"], 1.0)
        metrics = {"eval_loss": eval_loss, "perplexity": math.exp(min(eval_loss, 700.0))}
        if self.language_model and sums.get("bytes"):
            # bits per byte = total code length in bits / UTF-8 bytes of the evaluated text.
            metrics["bits_per_byte"] = sums["loss_sum"] / (math.log(2) * sums["bytes"])
        if "correct" in sums:
            metrics["accuracy"] = sums["correct"] / max(sums["num_targets"], 1.0)
        return metrics

    def whole_set_metrics(self, model: nn.Module, accelerator: Accelerator) -> dict[str, float]:
        """Metrics that need every prediction at once (a rank correlation), so cannot be summed per
        batch; `evaluate` adds them after the summed ones. Every process must return the same. None here."""
        return {}


def token_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    token_bytes: torch.Tensor,
    with_stats: bool = True,
    z_loss_weight: float = 0.0,
) -> LossOutput:
    """Summed cross-entropy over positions whose label is not -100, with bytes and correct counts.

    logits (b, t, v) and labels (b, t) are already aligned (no shift here). The evaluation
    statistics (argmax over the vocabulary, byte lookups) cost a full pass over the logits, so
    training steps, which never read them, pass with_stats=False. With z_loss_weight > 0 (training)
    the output carries aux_sum = weight * sum over targets of logsumexp(logits)^2 (PaLM's z-loss).
    """
    flat_logits = logits.reshape(-1, logits.shape[-1]).float()
    flat_labels = labels.reshape(-1)
    valid = flat_labels != -100
    if z_loss_weight > 0 and not with_stats:
        return z_loss_token_loss(flat_logits, flat_labels, valid, z_loss_weight)
    if not with_stats:
        loss_sum = nn.functional.cross_entropy(flat_logits, flat_labels, ignore_index=-100, reduction="sum")
        return LossOutput(loss_sum=loss_sum, num_targets=valid.sum())
    losses = nn.functional.cross_entropy(flat_logits, flat_labels, ignore_index=-100, reduction="none")
    with torch.no_grad():
        correct = (flat_logits.argmax(-1) == flat_labels) & valid
        target_ids = flat_labels[valid]
        nbytes = token_bytes.to(target_ids.device)[target_ids].sum()
    return LossOutput(
        loss_sum=losses.sum(),
        num_targets=valid.sum(),
        stats={"correct": correct.sum(), "bytes": nbytes},
        target_ids=target_ids,
        target_losses=losses[valid],
    )


def z_loss_token_loss(
    flat_logits: torch.Tensor, flat_labels: torch.Tensor, valid: torch.Tensor, weight: float
) -> LossOutput:
    """Cross-entropy written as logsumexp - target logit, so the z-loss reuses the same logsumexp."""
    lse = torch.logsumexp(flat_logits, dim=-1)  # (n,)
    target_logit = flat_logits.gather(1, flat_labels.clamp(min=0).unsqueeze(1)).squeeze(1)  # (n,)
    mask = valid.to(lse.dtype)
    return LossOutput(
        loss_sum=((lse - target_logit) * mask).sum(),
        num_targets=valid.sum(),
        aux_sum=weight * (lse.square() * mask).sum(),
    )
