"""The language-model head's loss without the micro-batch's (b, t, vocab) fp32 logits.

`token_loss` casts the whole logits to fp32: at micro-batch 8 x 4,096 tokens x a 128k vocabulary
that is 16 GB for one copy, before its gradient. Here the model's `lm_head` (same parameters, same
state-dict keys: only its class changes) multiplies the final hidden states by its weight one chunk
of `model.loss_chunk_tokens` tokens at a time, inside the model's forward (so DDP, FSDP2 and
torch.compile see an ordinary forward) and hands back the summed loss:

- `chunked`: an autograd Function that computes each chunk's logits, log-sum-exp and gradient
  (softmax minus the one-hot target) in the forward pass, keeps only the gradients of the hidden
  states (n, d) and of the weight (v, d), and scales them by the incoming gradient in backward
  (the approach of Liger's fused linear cross-entropy, Hsu et al. 2024, in plain PyTorch);
- `liger`: liger-kernel's Triton fused linear cross-entropy (CUDA, optional extra `gpu`);
- `auto`: liger when on CUDA and installed, else chunked; `stock`: the model's full logits.

Evaluation takes the chunked path with statistics (per-target losses, argmax accuracy, bytes)
computed row by row exactly as `token_loss` does, so bits per byte and accuracy are unchanged.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pretrain.config import ConfigError
from pretrain.objectives.base import LossOutput, token_loss

KERNELS = ("auto", "chunked", "liger", "stock")


@dataclass
class HeadRequest:
    """What one forward asks of the head: targets aligned with positions, and what to return."""

    labels: torch.Tensor  # (b, t), -100 where no target
    token_bytes: torch.Tensor
    with_stats: bool
    kernel: str
    chunk_tokens: int
    z_loss_weight: float = 0.0  # training: PaLM's z-loss on the same logsumexp (LossOutput.aux_sum)
    result: LossOutput | None = None


class ChunkedLMHead(nn.Linear):
    """The model's lm_head; with a request pending it computes the loss from its input instead of
    returning logits (it then returns an empty (b, t, 0) tensor as the model's `logits`)."""

    request: HeadRequest | None = None

    # Outside the compiled graph: torch.compile would guard on (and recompile for) each new request,
    # and the chunk loop is Python; the model's layers before the head stay compiled.
    @torch.compiler.disable
    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.request is None:
            return super().forward(hidden)
        self.request.result = _head_loss(hidden, self.weight, self.request)
        return hidden[..., :0]


def liger_available() -> bool:
    """True when liger-kernel (and Triton) can be imported."""
    return importlib.util.find_spec("liger_kernel") is not None


def install_head(model: nn.Module, kernel: str) -> nn.Module:
    """Turn the model's plain bias-free nn.Linear lm_head into a ChunkedLMHead (kernel != 'stock')."""
    if kernel == "liger" and not (torch.cuda.is_available() and liger_available()):
        raise ConfigError(
            "model.loss_kernel=liger needs a CUDA device and liger-kernel (pip install 'pretrain[gpu]'); "
            "use model.loss_kernel=auto or chunked"
        )
    head = model.get_output_embeddings()
    if kernel != "stock" and type(head) is nn.Linear and head.bias is None:
        head.__class__ = ChunkedLMHead
    return model


def find_head(model: Any) -> ChunkedLMHead | None:
    """The ChunkedLMHead inside a (possibly DDP-wrapped or compiled) model, if one was installed."""
    if not isinstance(model, nn.Module):
        return None  # e.g. the pipeline plan's stand-in that only returns the last stage's logits
    return next((m for m in model.modules() if isinstance(m, ChunkedLMHead)), None)


@contextmanager
def pending(head: ChunkedLMHead, request: HeadRequest) -> Iterator[HeadRequest]:
    head.request = request
    try:
        yield request
    finally:
        head.request = None


def lm_head_loss(
    model: Any,
    inputs: dict[str, torch.Tensor],
    labels: torch.Tensor,
    token_bytes: torch.Tensor,
    kernel: str = "auto",
    chunk_tokens: int = 1024,
    z_loss_weight: float = 0.0,
) -> LossOutput:
    """Summed next-token loss (and eval statistics when the model is in eval mode) of `model` on
    `inputs`, with `labels` (b, t) already aligned to positions; the full logits only for 'stock',
    a model without a ChunkedLMHead, or a tensor-parallel (DTensor) head."""
    with_stats = not model.training
    head = find_head(model)
    if kernel == "stock" or head is None or _is_dtensor(head.weight):
        logits = model(**inputs).logits
        return token_loss(logits, labels, token_bytes, with_stats=with_stats, z_loss_weight=z_loss_weight)
    request = HeadRequest(labels, token_bytes, with_stats, kernel, chunk_tokens, z_loss_weight)
    with pending(head, request):
        model(**inputs)
    assert request.result is not None, "the model's forward did not call its lm_head"
    return request.result


def _is_dtensor(tensor: torch.Tensor) -> bool:
    return type(tensor).__name__ == "DTensor"


def _head_loss(hidden: torch.Tensor, weight: torch.Tensor, request: HeadRequest) -> LossOutput:
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])  # (n, d)
    flat_labels = request.labels.reshape(-1).to(hidden.device)  # (n,)
    valid = flat_labels != -100
    dtype = _compute_dtype(hidden, weight)
    if request.with_stats:
        return chunked_stats(
            flat_hidden, weight, flat_labels, request.token_bytes, request.chunk_tokens, dtype
        )
    if request.z_loss_weight > 0:
        z = request.z_loss_weight
        total, z_sum = ChunkedCrossEntropy.apply(
            flat_hidden, weight, flat_labels, request.chunk_tokens, dtype, z
        )
        # total = cross-entropy + z-loss carries the gradient of both; the z part is reported on its own.
        return LossOutput(loss_sum=total - z_sum, num_targets=valid.sum(), aux_sum=z_sum)
    if request.kernel in ("auto", "liger") and hidden.is_cuda and liger_available():
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

        loss_sum = liger_fused_linear_cross_entropy(
            flat_hidden.to(dtype), weight.to(dtype), flat_labels, reduction="sum", accum_dtype=torch.float32
        )
    else:
        loss_sum = ChunkedCrossEntropy.apply(flat_hidden, weight, flat_labels, request.chunk_tokens, dtype)
    return LossOutput(loss_sum=loss_sum.float(), num_targets=valid.sum())


def _compute_dtype(hidden: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """The dtype the stock lm_head's matmul would run in: autocast's, else the weight's."""
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return weight.dtype


def _chunk_logits(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (h @ w.T).float()  # (c, v) fp32, one chunk only


@torch.no_grad()
def chunked_stats(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    token_bytes: torch.Tensor,
    chunk_tokens: int,
    dtype: torch.dtype,
) -> LossOutput:
    """token_loss's evaluation statistics, one chunk of rows at a time (same per-row arithmetic)."""
    w, h_all = weight.to(dtype), hidden.to(dtype)
    losses, correct = [], []
    with torch.autocast(hidden.device.type, enabled=False):
        for start in range(0, h_all.shape[0], chunk_tokens):
            logits = _chunk_logits(h_all[start : start + chunk_tokens], w)
            y = labels[start : start + chunk_tokens]
            losses.append(nn.functional.cross_entropy(logits, y, ignore_index=-100, reduction="none"))
            correct.append(logits.argmax(-1) == y)
    losses_all, valid = torch.cat(losses), labels != -100
    target_ids = labels[valid]
    return LossOutput(
        loss_sum=losses_all.sum(),
        num_targets=valid.sum(),
        stats={
            "correct": (torch.cat(correct) & valid).sum(),
            "bytes": token_bytes.to(target_ids.device)[target_ids].sum(),
        },
        target_ids=target_ids,
        target_losses=losses_all[valid],
    )


class ChunkedCrossEntropy(torch.autograd.Function):
    """sum_i CE(hidden_i @ weight.T, label_i) over rows with label != -100, chunk by chunk.

    Gradients are computed in the forward pass (one logits chunk alive at a time) and kept as fp32
    (n, d) and (v, d) tensors; backward only scales them, so no logits are recomputed."""

    @staticmethod
    def forward(ctx, hidden, weight, labels, chunk_tokens, dtype, z_weight=0.0):  # noqa: ANN001 (autograd)
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        w, h_all = weight.to(dtype), hidden.to(dtype)
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        z_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)
        dh = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device) if need_h else None
        dw = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, h_all.shape[0], chunk_tokens):
                h, y = h_all[start : start + chunk_tokens], labels[start : start + chunk_tokens]
                logits = _chunk_logits(h, w)  # (c, v)
                valid = (y != -100).unsqueeze(1)  # (c, 1)
                target = y.clamp(min=0).unsqueeze(1)
                lse = torch.logsumexp(logits, dim=-1, keepdim=True)  # (c, 1)
                loss += ((lse - logits.gather(1, target)) * valid).sum()
                if z_weight:
                    z_sum += z_weight * (lse.square() * valid).sum()
                if not (need_h or need_w):
                    continue
                # d loss / d logits = softmax - one_hot(target), zero on rows without a target;
                # the z-loss adds 2 z lse softmax.
                grad = logits.sub_(lse).exp_()
                if z_weight:
                    grad.mul_(1.0 + 2.0 * z_weight * lse)
                grad.scatter_add_(1, target, -torch.ones_like(lse))
                g = grad.mul_(valid).to(dtype)
                if need_h:
                    dh[start : start + chunk_tokens] = g @ w
                if need_w:
                    dw += g.T @ h
        ctx.save_for_backward(*(t for t in (dh, dw) if t is not None))
        ctx.has = (need_h, need_w)
        ctx.dtypes = (hidden.dtype, weight.dtype)
        if not z_weight:
            return loss
        ctx.mark_non_differentiable(z_sum)  # (cross-entropy + z-loss, z-loss): the first has both gradients
        return loss + z_sum, z_sum

    @staticmethod
    def backward(ctx, grad_loss, *_):  # noqa: ANN001 (with z-loss, the z output's gradient is ignored)
        saved = iter(ctx.saved_tensors)
        need_h, need_w = ctx.has
        dh = (next(saved) * grad_loss).to(ctx.dtypes[0]) if need_h else None
        dw = (next(saved) * grad_loss).to(ctx.dtypes[1]) if need_w else None
        return dh, dw, None, None, None, None
