"""Loss by token frequency: the validation loss of target tokens grouped by how often each token
type occurs in the training data.

Token types are ranked by their training count (most frequent first, ties by token id); rank
edges, e.g. (100, 1000, 10000) (`train.eval_frequency_buckets`), cut the ranks into buckets: ranks
1-100, 101-1000, 1001-10000, 10001 and up, plus the types never seen in training. Every evaluation
target falls in exactly one bucket, so the buckets' target counts sum to all targets and their
summed losses to the total loss. Each bucket reports its share of the targets, its mean loss
(nats/target) and its bits per byte (its code length over the UTF-8 bytes its targets spell).
The question it answers: does early training lower the loss of frequent tokens first and the long
tail later?

The counts are taken once from the training data: `count_token_ids` takes any iterable of
token-id arrays (packed blocks, a tokenized dataset's column, or memory-mapped Megatron shards read
one at a time: nothing needs the whole corpus in memory), and `load_or_count` caches them as a
.npy file; `training_token_counts` puts that file beside the tokenized data's `datasets` cache.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

COUNT_CHUNK_TOKENS = 1 << 24  # bincount this many tokens at a time: bounded memory on any corpus


def count_token_ids(arrays: Iterable[np.ndarray], vocab_size: int) -> np.ndarray:
    """Occurrences (vocab_size,) int64 of each token id over every array (any shape) in `arrays`.

    Arrays are read in chunks, so memory-mapped shards are streamed rather than loaded.
    """
    counts = np.zeros(vocab_size, dtype=np.int64)
    for array in arrays:
        flat = np.asarray(array).reshape(-1)
        for start in range(0, len(flat), COUNT_CHUNK_TOKENS):
            chunk = np.asarray(flat[start : start + COUNT_CHUNK_TOKENS], dtype=np.int64)
            if len(chunk) and (chunk.min() < 0 or chunk.max() >= vocab_size):
                raise ValueError(f"token ids must lie in [0, {vocab_size}); got {chunk.min()}..{chunk.max()}")
            counts += np.bincount(chunk, minlength=vocab_size)
    return counts


def load_or_count(path: Path, arrays: Iterable[np.ndarray], vocab_size: int) -> np.ndarray:
    """Counts cached at `path` (.npy) when present with the right size, else counted and written there.

    The file is written to a temporary name and renamed, so a concurrent or interrupted writer never
    leaves a partial file.
    """
    if path.is_file():
        counts = np.load(path)
        if counts.shape == (vocab_size,):
            return counts
    counts = count_token_ids(arrays, vocab_size)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}.npy")
    try:
        np.save(tmp, counts)
        os.replace(tmp, path)
    except OSError:  # a read-only data directory: the counts are still right, only not cached
        tmp.unlink(missing_ok=True)
    return counts


def training_token_counts(data: Any, vocab_size: int) -> np.ndarray:
    """Token counts of the packed training data (`PackedBlocks` or `ShardBlocks`: the tokens trained on).

    The blocks give their tokens as arrays (`token_arrays()`, streamed from the maps for shards) and
    where to cache the counts (`counts_cache_path`: beside the `datasets` cache or in our shard
    directory). Tokenized data held only in memory is counted in memory (one np.bincount pass, ~0.2 s
    per 10M tokens: cheaper than hashing it for a cache key).
    """
    path = data.counts_cache_path
    if path is None:
        return count_token_ids(data.token_arrays(), vocab_size)
    return load_or_count(path, data.token_arrays(), vocab_size)


def bucket_names(edges: Sequence[int]) -> list[str]:
    """Names of the buckets that rank edges cut: 'ranks 1-100', ..., 'ranks 10001+', 'unseen'."""
    bounds = [0, *edges]
    names = [f"ranks {lo + 1}-{hi}" for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    return [*names, f"ranks {bounds[-1] + 1}+", "unseen"]


def compute_token_buckets(counts: np.ndarray, edges: Sequence[int]) -> np.ndarray:
    """Bucket index (vocab,) of every token type: by frequency rank for seen types, last for unseen.

    Rank 1 is the most frequent type; ties are broken by token id so the ranking is deterministic.
    """
    if list(edges) != sorted(set(edges)) or (edges and edges[0] < 1):
        raise ValueError(f"frequency rank edges must be positive and strictly increasing, got {list(edges)}")
    order = np.argsort(-counts, kind="stable")  # token ids, most frequent first
    ranks = np.empty(len(counts), dtype=np.int64)
    ranks[order] = np.arange(1, len(counts) + 1)
    buckets = np.searchsorted(np.asarray(edges, dtype=np.int64), ranks, side="left")
    return np.where(counts > 0, buckets, len(edges) + 1)


class TokenBuckets:
    """The frequency buckets of a run: turns per-target losses into summed statistics and those
    sums into `loss_by_frequency` (a list of buckets with name, share, loss and bits_per_byte)."""

    def __init__(self, counts: np.ndarray, edges: Sequence[int], token_bytes: torch.Tensor) -> None:
        self.edges = tuple(edges)
        self.names = bucket_names(self.edges)
        self.bucket_of = torch.from_numpy(compute_token_buckets(counts, self.edges))
        self.types = torch.bincount(self.bucket_of, minlength=len(self.names)).tolist()
        self.token_bytes = token_bytes.to(torch.float64)

    def compute_sums(self, target_ids: torch.Tensor, target_losses: torch.Tensor) -> dict[str, torch.Tensor]:
        """Targets, summed loss (nats) and bytes of each bucket for one batch's targets (n,) and losses (n,)."""
        n = len(self.names)
        bucket = self.bucket_of.to(target_ids.device)[target_ids]
        losses = target_losses.detach().double()
        nbytes = self.token_bytes.to(target_ids.device)[target_ids]
        sums = {
            "targets": torch.bincount(bucket, minlength=n).double(),
            "loss": torch.zeros(n, dtype=torch.float64, device=losses.device).index_add_(0, bucket, losses),
            "bytes": torch.zeros(n, dtype=torch.float64, device=losses.device).index_add_(0, bucket, nbytes),
        }
        return {f"frequency_{stat}_{i}": values[i] for stat, values in sums.items() for i in range(n)}

    def finalize(self, sums: dict[str, float]) -> list[dict[str, Any]]:
        """One record per bucket from statistics summed over the evaluation set (empty bucket: loss None)."""
        total = sum(sums.get(f"frequency_targets_{i}", 0.0) for i in range(len(self.names)))
        records = []
        for i, name in enumerate(self.names):
            targets = sums.get(f"frequency_targets_{i}", 0.0)
            loss_sum, nbytes = sums.get(f"frequency_loss_{i}", 0.0), sums.get(f"frequency_bytes_{i}", 0.0)
            records.append(
                {
                    "name": name,
                    "types": self.types[i],
                    "targets": int(targets),
                    "share": targets / total if total else 0.0,
                    "loss": loss_sum / targets if targets else None,
                    "loss_sum": loss_sum,
                    "bits_per_byte": loss_sum / (math.log(2) * nbytes) if nbytes else None,
                }
            )
        return records


def build_token_buckets(
    edges: Sequence[int], train_data: Any, vocab_size: int, token_bytes: torch.Tensor
) -> TokenBuckets | None:
    """The run's buckets from its training data, or None when `edges` is empty (reporting is off)."""
    if not edges:
        return None
    return TokenBuckets(training_token_counts(train_data, vocab_size), edges, token_bytes)


def scalar_metrics(results: dict[str, Any]) -> dict[str, float]:
    """The numbers of an evaluation for trackers and log lines; each bucket's loss and share become
    `loss_by_frequency/NAME/loss` and `.../share`."""
    flat = {k: v for k, v in results.items() if isinstance(v, int | float)}
    for bucket in results.get("loss_by_frequency", ()):
        for key in ("loss", "share"):
            if bucket[key] is not None:
                flat[f"loss_by_frequency/{bucket['name'].replace(' ', '_')}/{key}"] = bucket[key]
    return flat


def plot_loss_by_frequency(eval_history: Path, final: dict[str, Any], out_png: Path) -> None:
    """Loss per frequency bucket against tokens seen (periodic evaluations, then the final one), and
    each bucket's share of its own total loss drop so far: which buckets are learned first."""
    import json

    lines = eval_history.read_text().splitlines() if eval_history.is_file() else []
    history = [r for r in map(json.loads, filter(str.strip, lines)) if "loss_by_frequency" in r]
    points = [*history, final] if "loss_by_frequency" in final else history
    if not points:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r.get("tokens_seen", r.get("step", 0)) for r in points]
    fig, (ax_loss, ax_drop) = plt.subplots(2, 1, figsize=(7, 6.5), sharex=True)
    for i, bucket in enumerate(points[-1]["loss_by_frequency"]):
        losses = [r["loss_by_frequency"][i]["loss"] for r in points]
        if any(v is None for v in losses):
            continue
        label = f"{bucket['name']} ({100 * bucket['share']:.1f}% of targets)"
        (line,) = ax_loss.plot(x, losses, "o-", markersize=3, label=label)
        total_drop = losses[0] - losses[-1]
        if len(losses) > 1 and total_drop > 0:
            fraction = [(losses[0] - v) / total_drop for v in losses]
            ax_drop.plot(x, fraction, "o-", markersize=3, color=line.get_color())
    ax_loss.set_ylabel("eval loss (nats/target)")
    ax_loss.legend(fontsize=8)
    ax_loss.set_title("validation loss by training frequency rank of the target token", fontsize=10)
    ax_drop.set_ylabel("share of the bucket's loss drop\n(first to last evaluation)")
    ax_drop.set_xlabel("training tokens seen")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
