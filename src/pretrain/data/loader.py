"""Deterministic, resumable batching: the data order is a pure function of (seed, position).

Epoch e visits the blocks in the order of `BlockPermutation(n, seed, e)`, a bijection of [0, n)
computed per position (a Feistel network with cycle-walking), so the order costs O(1) memory however
many blocks there are (a stored `randperm` takes 8 bytes per block: 32 GB at 1 T tokens); global
micro-batch k of an epoch holds the next `micro_batch_size * world_size` positions and rank r takes
its contiguous slice. Resuming from a
checkpoint therefore jumps straight to the saved position (no re-reading from the start), and the
collator's randomness is seeded from the same position, so a resumed run sees exactly the same
batches, masks and spans as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pretrain.data.text import DataError

Collate = Callable[[list[dict[str, torch.Tensor]], torch.Generator], dict[str, torch.Tensor]]


def seeded_generator(*parts: int) -> torch.Generator:
    """A CPU generator seeded from a tuple of ints (seed, position, rank, ...)."""
    seed = 0
    for p in parts:
        seed = (seed * 1_000_003 + int(p)) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


_MASK64 = (1 << 64) - 1


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic): a fast, well-spread hash."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class BlockPermutation:
    """A pseudo-random bijection of [0, n), a pure function of (n, seed, epoch), evaluated per index.

    A balanced Feistel network over 2k bits (4^k >= n) is a bijection of [0, 4^k); cycle-walking
    (re-applying it while the value is >= n) restricts it to a bijection of [0, n), in under 4 rounds
    of walking on average since 4^k < 4n. Six Feistel rounds with splitmix64 round functions.
    """

    rounds = 6

    def __init__(self, n: int, seed: int, epoch: int) -> None:
        self.n = n
        self.half_bits = max(1, (max(n - 1, 1).bit_length() + 1) // 2)
        base = (int(seed) * 1_000_003 + int(epoch)) & _MASK64
        keys = _mix64(np.arange(1, self.rounds + 1, dtype=np.uint64) + np.uint64(base))
        self.keys = [np.uint64(k) for k in keys]

    def _feistel(self, x: np.ndarray) -> np.ndarray:
        bits, mask = np.uint64(self.half_bits), np.uint64((1 << self.half_bits) - 1)
        left, right = x >> bits, x & mask
        for key in self.keys:
            left, right = right, left ^ (_mix64(right ^ key) & mask)
        return (left << bits) | right

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        """The permuted index of each position (int64 array in, int64 array out)."""
        x = self._feistel(np.asarray(positions, dtype=np.uint64))
        while (outside := x >= np.uint64(self.n)).any():
            x[outside] = self._feistel(x[outside])
        return x.astype(np.int64)


@dataclass
class TrainBatches:
    """Endless micro-batches for one rank; `position` counts global micro-batches consumed."""

    dataset: Sequence[dict[str, torch.Tensor]]
    collate: Collate
    micro_batch_size: int
    seed: int
    rank: int = 0
    world_size: int = 1
    position: int = 0

    def __post_init__(self) -> None:
        self.per_epoch = len(self.dataset) // (self.micro_batch_size * self.world_size)
        if self.per_epoch == 0:
            raise DataError(
                f"the training set has {len(self.dataset)} sequences, fewer than one global micro-batch "
                f"({self.micro_batch_size} x {self.world_size} processes); give more data or lower train.micro_batch_size"
            )

    @property
    def epoch(self) -> float:
        return self.position / self.per_epoch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        epoch, k = divmod(self.position, self.per_epoch)
        global_bs = self.micro_batch_size * self.world_size
        start = k * global_bs + self.rank * self.micro_batch_size
        positions = np.arange(start, start + self.micro_batch_size)
        if hasattr(self.dataset, "blocks_at"):  # a mixture orders its sources' blocks itself
            first = self.position * global_bs + self.rank * self.micro_batch_size
            items = self.dataset.blocks_at(np.arange(first, first + self.micro_batch_size), self.seed)
        else:
            indices = BlockPermutation(len(self.dataset), self.seed, epoch)(positions).tolist()
            items = [self.dataset[i] for i in indices]
        batch = self.collate(items, seeded_generator(self.seed, self.position, self.rank))
        self.position += 1
        return batch

    def state_dict(self) -> None:
        """Nothing beyond `position`: the order is a pure function of (seed, position)."""
        return None

    def load_state_dict(self, state: None) -> None:
        """Nothing to restore beyond `position` (set by the trainer)."""

    def check_budget(self, micro_batches: int) -> None:
        """Refuse now a run that would read past the data it may read (a mixture without repeats)."""
        if hasattr(self.dataset, "check_budget"):
            self.dataset.check_budget(micro_batches * self.micro_batch_size * self.world_size)

    def source_metrics(self) -> dict[str, dict[str, float]]:
        """tokens_seen_by_source / epochs_by_source of a mixture so far; {} for one source."""
        if not hasattr(self.dataset, "source_metrics"):
            return {}
        return self.dataset.source_metrics(self.position * self.micro_batch_size * self.world_size)


def eval_batches(
    dataset: Sequence[dict[str, torch.Tensor]],
    collate: Collate,
    batch_size: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    max_batches: int = 0,
) -> Iterator[tuple[dict[str, torch.Tensor], bool]]:
    """(batch, is_real) pairs for one rank; every rank yields the same number of batches.

    Batches are dealt round-robin; a rank that runs out repeats its last batch flagged
    is_real=False (its statistics are discarded), so collective ops (ZeRO-3 gathers) stay in step.
    Each batch's randomness is seeded by its index alone: evaluations are comparable over time.
    """
    n_batches = -(-len(dataset) // batch_size)
    if max_batches:
        n_batches = min(n_batches, max_batches)
    per_rank = -(-n_batches // world_size)
    last = None
    for j in range(per_rank):
        b = j * world_size + rank
        if b < n_batches:
            items = [dataset[i] for i in range(b * batch_size, min((b + 1) * batch_size, len(dataset)))]
            last = collate(items, seeded_generator(seed, b))
            yield last, True
        elif last is not None:
            yield last, False
        else:  # this rank has no batch at all: borrow batch 0 so it can take part in collectives
            items = [dataset[i] for i in range(min(batch_size, len(dataset)))]
            last = collate(items, seeded_generator(seed, 0))
            yield last, False
