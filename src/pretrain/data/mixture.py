"""Weighted mixtures of shard sets (data.sources): which source each training block comes from, and which
of its blocks, as a pure function of (seed, position).

The source of global block slot g follows Megatron-LM's blended-dataset rule (`BlendedDataset`'s index
builder): slot i goes to the source furthest behind its share, argmax_s (w_s * (i + 1) - drawn_s), so
after any prefix every source is within one block of its weight. The rule is computed once for a window of
`WINDOW` slots and repeated, so locating a slot is O(1) (`g // WINDOW` windows, then a prefix-count
table) and memory is O(WINDOW * sources) whatever the corpus or run size; a source's rate is exact to
1 / (WINDOW * w_s) over whole windows. The k-th block drawn from source s is block
`BlockPermutation(n_s, seed_s, k // n_s)(k % n_s)`: a fresh permutation per epoch of that source, so a
source smaller than its share repeats and `k / n_s` counts its epochs. Resume restores the position only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pretrain.data.loader import BlockPermutation
from pretrain.data.shard_set import ShardBlocks, ShardSet, is_shard_path, load_shard_set
from pretrain.data.text import DataError, load_text_file
from pretrain.settings import DataConfig, SourceConfig

WINDOW = 1 << 14  # slots per repetition of the source pattern: rates exact to 1 / (16384 w_s)


class MixtureSchedule:
    """Source of every global block slot, and how many blocks each source gave before it."""

    def __init__(self, weights: list[float], window: int = WINDOW) -> None:
        w = np.asarray(weights, dtype=np.float64)
        if len(w) == 0 or not np.all(w > 0):
            raise DataError(
                f"mixture weights {list(weights)} must all be > 0; give each source a positive weight"
            )
        w = w / w.sum()
        self.window = window
        self.pattern = np.empty(window, dtype=np.int64)
        drawn = np.zeros(len(w), dtype=np.int64)
        for i in range(window):  # Megatron's greedy rule: the source furthest behind its share
            s = int(np.argmax(w * (i + 1) - drawn))
            self.pattern[i] = s
            drawn[s] += 1
        self.per_window = drawn
        # prefix[r, s]: blocks of source s among the first r slots of a window.
        onehot = np.eye(len(w), dtype=np.int64)[self.pattern]
        self.prefix = np.concatenate([np.zeros((1, len(w)), np.int64), np.cumsum(onehot, axis=0)])

    def locate(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(source, k) of each slot: it holds the k-th block (0-based) drawn from that source."""
        window, r = np.divmod(np.asarray(slots, dtype=np.int64), self.window)
        source = self.pattern[r]
        return source, window * self.per_window[source] + self.prefix[r, source]

    def drawn(self, num_slots: int) -> np.ndarray:
        """Blocks drawn from each source by the first `num_slots` slots."""
        window, r = divmod(int(num_slots), self.window)
        return window * self.per_window + self.prefix[r]


@dataclass(frozen=True)
class SourceSets:
    """A mixture's shard sets before packing: names, weights, and whether a source may repeat."""

    names: tuple[str, ...]
    weights: tuple[float, ...]
    sets: tuple[ShardSet, ...]
    repeat: bool = True


class MixtureBlocks:
    """Blocks of every source. Training draws them by weight (`blocks_at`); evaluation reads them in
    order (`[i]`, sources one after another) and per source (`parts`)."""

    def __init__(self, sources: SourceSets, seq_len: int) -> None:
        self.sources, self.seq_len = sources, seq_len
        self.parts = [
            (name, ShardBlocks(s, seq_len)) for name, s in zip(sources.names, sources.sets, strict=True)
        ]
        self.sizes = np.array([len(blocks) for _, blocks in self.parts], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)])
        self.schedule = MixtureSchedule(list(sources.weights))

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return self.parts[s][1][i - int(self.offsets[s])]

    @property
    def num_tokens(self) -> int:
        return sum(blocks.num_tokens for _, blocks in self.parts)

    @property
    def efficiency(self) -> float:
        return len(self) * self.seq_len / self.num_tokens

    def blocks_at(self, slots: np.ndarray, seed: int) -> list[dict[str, torch.Tensor]]:
        """The blocks of these global slots; each source's order is its own per-epoch permutation."""
        sources, ks = self.schedule.locate(slots)
        epochs, within = np.divmod(ks, self.sizes[sources])
        if not self.sources.repeat and epochs.any():
            raise self._exhausted(int(sources[np.argmax(epochs > 0)]))
        index = np.empty_like(ks)
        for s, epoch in {(int(s), int(e)) for s, e in zip(sources, epochs, strict=True)}:
            here = (sources == s) & (epochs == epoch)
            index[here] = BlockPermutation(int(self.sizes[s]), seed * 65_537 + s + 1, epoch)(within[here])
        return [self.parts[s][1][i] for s, i in zip(sources.tolist(), index.tolist(), strict=True)]

    def check_budget(self, num_slots: int) -> None:
        """With data.mixture_repeat=false, refuse a run that would draw a source past its last block."""
        if self.sources.repeat:
            return
        over = np.nonzero(self.schedule.drawn(num_slots) > self.sizes)[0]
        if len(over):
            raise self._exhausted(int(over[0]), self.schedule.drawn(num_slots)[over[0]])

    def _exhausted(self, s: int, wanted: int | None = None) -> DataError:
        need = f" this run needs {wanted} of them" if wanted is not None else " it is exhausted"
        return DataError(
            f"data source {self.parts[s][0]!r} has {self.sizes[s]} blocks and{need} (weight "
            f"{self.sources.weights[s]}); data.mixture_repeat=false forbids a second epoch: set it to true, "
            "lower the source's weight or train.max_steps, or give the source more data"
        )

    def source_metrics(self, num_slots: int) -> dict[str, dict[str, float]]:
        """tokens_seen_by_source and epochs_by_source after `num_slots` global block slots."""
        drawn = self.schedule.drawn(num_slots)
        return {
            "tokens_seen_by_source": {
                n: int(d) * self.seq_len for (n, _), d in zip(self.parts, drawn, strict=True)
            },
            "epochs_by_source": {
                n: float(d / z) for (n, _), d, z in zip(self.parts, drawn, self.sizes, strict=True)
            },
        }

    def token_arrays(self) -> Iterator[np.ndarray]:
        """Every source's blocks, source after source (token counts weigh sources by size, not weight)."""
        for _, blocks in self.parts:
            yield from blocks.token_arrays()

    @property
    def counts_cache_path(self) -> Path | None:
        return None


def check_sources(cfg: DataConfig) -> None:
    """Every source path exists (before any tokenizer is trained or text tokenized)."""
    for key in ("sources", "validation_sources"):
        for i, source in enumerate(getattr(cfg, key)):
            p = Path(source.path)
            if not p.exists() and not p.with_name(p.name + ".idx").exists():
                raise DataError(
                    f"data.{key}[{i}] ({source.label()}): {source.path} does not exist; fix the path or drop the source"
                )


def tokenizer_data(cfg: DataConfig) -> ShardSet | object:
    """What a mixture run's tokenizer comes from: the first shard source (its saved tokenizer), else the
    text of the first raw source (a BPE is trained on it unless model.tokenizer_name is given)."""
    check_sources(cfg)
    for source in cfg.sources:
        if is_shard_path(source.path):
            return load_shard_set(source.path)
    return load_text_file(cfg.sources[0].path, cfg.text_column)


def load_mixture(cfg: DataConfig, shard_path: Callable[[SourceConfig], str]) -> tuple[SourceSets, SourceSets]:
    """(train, validation) of data.sources: `shard_path` gives each source's shards (raw inputs are
    tokenized by the caller); validation is data.validation_sources, else each source's held-out tail."""
    check_sources(cfg)
    sets = [load_shard_set(shard_path(s)) for s in cfg.sources]
    names = tuple(s.label() for s in cfg.sources)
    if cfg.validation_sources:
        valid = SourceSets(
            tuple(s.label() for s in cfg.validation_sources),
            tuple(s.weight for s in cfg.validation_sources),
            tuple(load_shard_set(shard_path(s)) for s in cfg.validation_sources),
        )
        train = tuple(sets)
    else:
        split = [s.split_at_document(cfg.validation_fraction) for s in sets]
        train = tuple(head for head, _ in split)
        valid = SourceSets(names, tuple(s.weight for s in cfg.sources), tuple(tail for _, tail in split))
    weights = tuple(s.weight for s in cfg.sources)
    return SourceSets(names, weights, train, cfg.mixture_repeat), valid
