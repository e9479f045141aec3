"""Real streaming (data.streaming=true): a `datasets` IterableDataset tokenized and packed on the fly.

Hub datasets and local files are read through `load_dataset(..., streaming=True)`, in order, with no
bounded prefix: nothing is downloaded or tokenized ahead beyond `READ_DOCUMENTS` documents. Each
process reads its own part of the stream (`datasets.distributed.split_dataset_by_node`: whole shards
when their number divides the world size, else every world_size-th document). Documents are encoded by
`fast_encode`, EOS-terminated and appended to a buffer; a block is the buffer's first `seq_len` tokens.

Resume is exact without re-reading: a checkpoint holds, for every process, the stream's
`IterableDataset.state_dict()` (datasets resumes at the saved shard and example), the packer's
partial block (the buffered tokens not yet in a block) and the number of completed passes over the
stream; every process restores its own entry, so a resume needs the same number of processes. The
stream is read in its stored order (datasets' shuffle buffer is not restored on resume, so none is
used): shuffle the files beforehand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
import torch.distributed as dist
from datasets.distributed import split_dataset_by_node
from transformers import PreTrainedTokenizerBase

from pretrain.data.fast_encode import batch_encoder
from pretrain.data.loader import Collate, TrainBatches, seeded_generator
from pretrain.data.text import DataError, load_hub_dataset, load_text_file
from pretrain.settings import DataConfig

READ_DOCUMENTS = 16  # documents encoded per read: the read-ahead, and at most what a checkpoint buffers
_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".txt": "text"}


def stream_file(path: str, text_column: str = "text") -> datasets.IterableDataset:
    """A local file, or a directory of files of one type, as a stream of {"text": ...} rows."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file {path} does not exist; check --data.train_file")
    files = sorted(str(f) for f in p.iterdir() if f.suffix in _BUILDERS) if p.is_dir() else [str(p)]
    suffixes = {Path(f).suffix for f in files}
    if len(suffixes) != 1 or (builder := _BUILDERS.get(suffixes.pop())) is None:
        raise DataError(
            f"{path}: data.streaming=true reads files of one type among {sorted(_BUILDERS)}; found {files[:3]}"
        )
    kwargs = {"sample_by": "paragraph"} if builder == "text" else {}  # a .txt document per blank-line block
    stream = datasets.load_dataset(builder, data_files=files, split="train", streaming=True, **kwargs)
    return stream.rename_column(text_column, "text") if text_column != "text" else stream


def load_stream_datasets(cfg: DataConfig) -> tuple[datasets.IterableDataset, datasets.Dataset]:
    """(train stream, validation dataset): validation is data.validation_file or the Hub's split."""
    if cfg.train_file:
        if not cfg.validation_file:
            raise DataError(
                "data.streaming=true cannot hold out part of a stream for validation; give --data.validation_file"
            )
        train = stream_file(cfg.train_file, cfg.text_column)
    elif cfg.dataset_name:
        train = load_hub_dataset(cfg, "train")
        if cfg.text_column != "text":
            train = train.rename_column(cfg.text_column, "text")
    else:
        raise DataError("data.streaming=true streams data.train_file or data.dataset_name; set one of them")
    if cfg.validation_file:
        valid = load_text_file(cfg.validation_file, cfg.text_column)
    else:
        valid = load_hub_dataset(cfg, "validation")
        valid = valid.rename_column(cfg.text_column, "text") if cfg.text_column != "text" else valid
    if cfg.max_train_documents:
        train = train.take(cfg.max_train_documents)
    return train, valid


@dataclass(frozen=True)
class StreamBlocks:
    """A training stream and how to pack it: the run's tokenizer (its encoder, EOS) and the block length."""

    stream: datasets.IterableDataset
    tokenizer: PreTrainedTokenizerBase
    seq_len: int
    special_tokens_in_text: str = "parse"


@dataclass
class StreamBatches:
    """Endless micro-batches of packed blocks read from this process's part of the stream.

    Same interface as `TrainBatches` (`position` counts global micro-batches; the collator is seeded
    from it), plus `state_dict()` / `load_state_dict()` for what the position alone cannot restore."""

    blocks: StreamBlocks
    collate: Collate
    micro_batch_size: int
    seed: int
    rank: int = 0
    world_size: int = 1
    position: int = 0
    passes: int = 0  # completed passes over the stream
    buffer: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))

    def __post_init__(self) -> None:
        stream = self.blocks.stream
        self.stream = (
            split_dataset_by_node(stream, self.rank, self.world_size) if self.world_size > 1 else stream
        )
        self.encode = batch_encoder(self.blocks.tokenizer, self.blocks.special_tokens_in_text)
        self.eos = self.blocks.tokenizer.eos_token_id
        self._rows = None  # the live iterator, opened on first read (from a loaded state, if any)
        self._loaded_state: dict | None = None

    @property
    def epoch(self) -> float:
        return float(self.passes)

    def __iter__(self) -> StreamBatches:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        items = [self._next_block() for _ in range(self.micro_batch_size)]
        batch = self.collate(items, seeded_generator(self.seed, self.position, self.rank))
        self.position += 1
        return batch

    def _next_block(self) -> dict[str, torch.Tensor]:
        n = self.blocks.seq_len
        while len(self.buffer) < n:
            self._read()
        block, self.buffer = self.buffer[:n], self.buffer[n:]
        return {"input_ids": torch.from_numpy(block.astype(np.int64))}

    def _read(self) -> None:
        """Encode the next documents onto the buffer; at the end of the stream start the next pass."""
        if self._rows is None:
            self.stream.load_state_dict(self._loaded_state)  # None: from the start
            self._rows, self._pass_texts = iter(self.stream), 0
            self._from_start = self._loaded_state is None
        texts = []
        for row in self._rows:
            if row["text"] and row["text"].strip():
                texts.append(row["text"])
            if len(texts) == READ_DOCUMENTS:
                break
        else:  # the stream ended
            if self._from_start and self._pass_texts + len(texts) == 0:
                raise DataError("the training stream yields no text; check data.train_file / dataset_name")
            self.passes += 1
            self._rows, self._loaded_state = None, None
        self._pass_texts += len(texts)
        if texts:
            ids = self.encode(texts)
            self.buffer = np.concatenate(
                [self.buffer, *[np.append(x, self.eos).astype(np.int32) for x in ids]]
            )

    def check_budget(self, micro_batches: int) -> None:
        """A stream has no fixed size to check against."""

    def source_metrics(self) -> dict[str, Any]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Every process's stream state, partial block and passes (a collective: call on all processes)."""
        stream_state = self.stream.state_dict() if self._rows is not None else self._loaded_state
        local = {"stream": stream_state, "buffer": self.buffer.tolist(), "passes": self.passes}
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            everyone: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(everyone, local)
            return {"ranks": everyone}
        return {"ranks": [local]}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore this process's entry of a `state_dict()`; the next read continues where it stopped."""
        if state is None:
            raise DataError(
                "the checkpoint holds no stream state (saved without data.streaming); resume without it"
            )
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if len(state["ranks"]) != world:
            raise DataError(
                f"the checkpoint's stream state is from {len(state['ranks'])} processes, this run has {world}; "
                "resume a streaming run with the same number of processes"
            )
        mine = state["ranks"][dist.get_rank() if world > 1 else 0]
        self._loaded_state, self._rows = mine["stream"], None
        self.buffer = np.asarray(mine["buffer"], dtype=np.int32)
        self.passes = mine["passes"]


def train_batches(
    data: Any, collate: Collate, micro_batch_size: int, seed: int, rank: int = 0, world_size: int = 1
) -> TrainBatches | StreamBatches:
    """The training batches of a run: read from a stream, or drawn by position from indexed blocks."""
    kind = StreamBatches if isinstance(data, StreamBlocks) else TrainBatches
    return kind(data, collate, micro_batch_size, seed, rank, world_size)
