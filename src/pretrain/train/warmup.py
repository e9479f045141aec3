"""Sequence-length and batch-size warmup, both ramps in training tokens (OLMo-core / Megatron style).

- Sequence length (Li et al. 2022, "The stability-efficiency dilemma"): each packed row of
  `data.seq_len` tokens is cut into shorter rows, so a step reads the same tokens in the same
  order; the row length grows linearly from `seq_len_warmup_start` to seq_len (in divisors of it).
- Batch size (GPT-3, Brown et al. 2020, sec. 2.3): the micro-steps of an optimizer step grow
  linearly from 1 to `gradient_accumulation_steps`.

Both are pure functions of the tokens seen before the step, which checkpoints save, so a resumed
run takes exactly the steps of an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

from pretrain.config import ConfigError
from pretrain.objectives.base import Batch


@dataclass(frozen=True)
class Warmups:
    seq_len: int  # full row length (tokens)
    seq_start: int  # first row length (tokens)
    seq_tokens: int  # tokens over which the row length ramps (0 = off)
    accumulation: int  # full micro-steps per optimizer step
    batch_tokens: int  # tokens over which the micro-steps ramp (0 = off)

    def seq_len_at(self, tokens_seen: int) -> int:
        """Row length of the next step: the largest divisor of seq_len not above the linear ramp."""
        if not self.seq_tokens or tokens_seen >= self.seq_tokens:
            return self.seq_len
        target = self.seq_start + (self.seq_len - self.seq_start) * tokens_seen / self.seq_tokens
        return max(
            d for d in range(self.seq_start, self.seq_len + 1) if self.seq_len % d == 0 and d <= target
        )

    def accumulation_at(self, tokens_seen: int) -> int:
        """Micro-steps of the next optimizer step."""
        if not self.batch_tokens or tokens_seen >= self.batch_tokens:
            return self.accumulation
        return 1 + int((self.accumulation - 1) * tokens_seen / self.batch_tokens)

    def shorten(self, batch: Batch, tokens_seen: int) -> Batch:
        """`batch` with each (b, seq_len) row cut into (b * seq_len / L, L) rows."""
        length = self.seq_len_at(tokens_seen)
        if length == self.seq_len:
            return batch
        return {k: v.reshape(-1, length) for k, v in batch.items()}


def build_warmups(tcfg: object, seq_len: int, objective: object, deepspeed: bool) -> Warmups:
    """The run's warmups from `train.*`, after refusing what they cannot apply to."""
    warm = Warmups(
        seq_len=seq_len,
        seq_start=tcfg.seq_len_warmup_start,
        seq_tokens=tcfg.seq_len_warmup_tokens,
        accumulation=tcfg.gradient_accumulation_steps,
        batch_tokens=tcfg.batch_size_warmup_tokens,
    )
    if warm.seq_tokens:
        if objective.name != "causal" or objective.cfg.data.document_mask:
            raise ConfigError(
                "train.seq_len_warmup_tokens cuts packed causal rows; it needs objective causal without "
                "data.document_mask"
            )
        if not 1 <= warm.seq_start <= seq_len or seq_len % warm.seq_start:
            raise ConfigError(
                f"train.seq_len_warmup_start={warm.seq_start} must divide data.seq_len={seq_len}; e.g. {seq_len // 4}"
            )
    if warm.batch_tokens and deepspeed:
        raise ConfigError(
            "train.batch_size_warmup_tokens changes the micro-steps per step, which DeepSpeed fixes in its "
            "config; set it to 0 under DeepSpeed"
        )
    return warm
