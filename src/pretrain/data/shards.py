"""Token shards in the Megatron-LM indexed format (`NAME.bin` + `NAME.idx`), written and memory-mapped.

This is the layout Megatron-LM's `MMapIndexedDataset`, GPT-NeoX and datatrove's Megatron tokenizer
write, so shards move between those tools and this one unchanged. Byte by byte (little-endian):

    NAME.bin  the token ids of every document back to back, dtype uint16 (vocabulary < 65,500) or int32
    NAME.idx  b"MMIDIDX\\x00\\x00"      9 bytes  magic
              <Q version = 1           8 bytes
              <B dtype code            1 byte   (8 = uint16, 4 = int32; Megatron's table)
              <Q N sequences           8 bytes
              <Q M = N + 1 documents   8 bytes
              int32 lengths[N]                  tokens of each sequence
              int64 pointers[N]                 byte offset of each sequence in NAME.bin
              int64 document_index[M]           sequence index where each document starts (0, 1, ..., N)

One sequence is one document (EOS included). A shard is written under a temporary name and moved into
place with `os.replace` (the .bin first, the .idx last), so a shard whose .idx exists is complete.
Reading maps both files and copies nothing: a token slice is a view of the page cache.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from pretrain.data.text import DataError

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
HEADER = struct.Struct("<9sQBQQ")  # magic, version, dtype code, sequences, documents: 34 bytes
# Megatron-LM's dtype codes (megatron/core/datasets/indexed_dataset.py DType).
DTYPE_CODES: dict[int, type] = {
    1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float32, 8: np.uint16
}  # fmt: skip
CODE_OF_DTYPE = {np.dtype(v): k for k, v in DTYPE_CODES.items()}


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (Megatron's rule: vocabulary < 65,500), else int32."""
    return np.dtype(np.uint16 if vocab_size < 65_500 else np.int32)


def index_bytes(lengths: np.ndarray, dtype: np.dtype) -> bytes:
    """The whole .idx file for sequences of these lengths (one document per sequence)."""
    lengths = np.asarray(lengths, dtype=np.int32)
    n = len(lengths)
    pointers = np.zeros(n, dtype=np.int64)
    np.cumsum(lengths[:-1], dtype=np.int64, out=pointers[1:])
    pointers *= np.dtype(dtype).itemsize
    header = HEADER.pack(MAGIC, VERSION, CODE_OF_DTYPE[np.dtype(dtype)], n, n + 1)
    return header + lengths.tobytes() + pointers.tobytes() + np.arange(n + 1, dtype=np.int64).tobytes()


def _replace_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class ShardInfo:
    """What meta.json records of one written shard."""

    name: str
    documents: int
    tokens: int
    max_token_id: int


class ShardWriter:
    """Appends documents to `prefix`.bin under a temporary name; `close()` publishes the pair atomically.

    Memory is O(documents) for the lengths, never O(tokens): ids go to the file as they come."""

    def __init__(self, prefix: Path, dtype: np.dtype) -> None:
        self.prefix, self.dtype = Path(prefix), np.dtype(dtype)
        self.bin_path = self.prefix.with_name(self.prefix.name + ".bin")
        self._tmp = self.bin_path.with_name(f".{self.bin_path.name}.tmp{os.getpid()}")
        self._file = open(self._tmp, "wb")  # noqa: SIM115 - closed in close()
        self._lengths: list[int] = []
        self.tokens, self.max_token_id = 0, -1

    def add(self, ids: np.ndarray) -> None:
        """Append one document's ids (EOS included by the caller)."""
        if len(ids) > np.iinfo(np.int32).max:
            raise DataError(f"a document of {len(ids)} tokens does not fit the format's int32 lengths")
        if len(ids):
            self.max_token_id = max(self.max_token_id, int(ids.max()))
        self._file.write(np.ascontiguousarray(ids, dtype=self.dtype).tobytes())
        self._lengths.append(len(ids))
        self.tokens += len(ids)

    def close(self) -> ShardInfo:
        """Flush, move the .bin into place, then write the .idx (the completion mark) atomically."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._tmp, self.bin_path)
        lengths = np.asarray(self._lengths, dtype=np.int32)
        _replace_atomically(
            self.prefix.with_name(self.prefix.name + ".idx"), index_bytes(lengths, self.dtype)
        )
        return ShardInfo(self.prefix.name, len(lengths), self.tokens, self.max_token_id)


def write_shard(prefix: Path, documents: list[np.ndarray], dtype: np.dtype) -> ShardInfo:
    """Write `prefix`.bin and `prefix`.idx atomically from a list of documents' ids."""
    writer = ShardWriter(prefix, dtype)
    for ids in documents:
        writer.add(np.asarray(ids))
    return writer.close()


class IndexedShard:
    """A memory-mapped `.bin`/`.idx` pair; `tokens` is the whole .bin as a read-only array (no copy)."""

    def __init__(self, prefix: str | Path) -> None:
        self.prefix = Path(prefix)
        self.bin_path = self.prefix.with_name(self.prefix.name + ".bin")
        self.idx_path = self.prefix.with_name(self.prefix.name + ".idx")
        for path in (self.bin_path, self.idx_path):
            if not path.is_file():
                raise DataError(
                    f"shard {self.prefix}: {path.name} is missing; rerun `pretrain data tokenize`"
                )
        self.dtype, self.num_sequences = self._read_header()
        self._check_sizes()

    def _read_header(self) -> tuple[np.dtype, int]:
        with open(self.idx_path, "rb") as f:
            raw = f.read(HEADER.size)
        if len(raw) < HEADER.size or raw[:9] != MAGIC:
            raise DataError(
                f"{self.idx_path} is not a Megatron index (magic {raw[:9]!r}, expected {MAGIC!r}); "
                "give an .idx written by `pretrain data tokenize`, Megatron-LM or datatrove"
            )
        _, version, code, sequences, documents = HEADER.unpack(raw)
        if version != VERSION or code not in DTYPE_CODES or documents < 1:
            raise DataError(
                f"{self.idx_path}: unsupported index (version {version}, dtype code {code}, {documents} "
                "documents); only version 1 with a known dtype is read"
            )
        self.num_documents = documents
        return np.dtype(DTYPE_CODES[code]), sequences

    def _check_sizes(self) -> None:
        n, m = self.num_sequences, self.num_documents
        expected = HEADER.size + 4 * n + 8 * n + 8 * m
        actual = self.idx_path.stat().st_size
        if actual != expected:
            raise DataError(
                f"{self.idx_path} is {actual} bytes but its header says {n} sequences ({expected} bytes): "
                "the index is truncated or corrupt; rewrite the shard"
            )
        bin_bytes = self.bin_path.stat().st_size
        end = int(self.pointers[-1]) + int(self.lengths[-1]) * self.dtype.itemsize if n else 0
        if bin_bytes != end or (n and int(self.pointers[0]) != 0):
            raise DataError(
                f"{self.bin_path} is {bin_bytes} bytes but {self.idx_path.name} describes {end}: the .bin is "
                "truncated or the .idx belongs to another .bin; rewrite the shard (rerun `pretrain data tokenize`)"
            )

    @cached_property
    def lengths(self) -> np.ndarray:
        """Tokens of each sequence, int32 (N,), memory-mapped."""
        return np.memmap(self.idx_path, np.int32, "r", HEADER.size, (self.num_sequences,))

    @cached_property
    def pointers(self) -> np.ndarray:
        """Byte offset of each sequence in the .bin, int64 (N,), memory-mapped."""
        offset = HEADER.size + 4 * self.num_sequences
        return np.memmap(self.idx_path, np.int64, "r", offset, (self.num_sequences,))

    @cached_property
    def document_index(self) -> np.ndarray:
        """Sequence index at which each document starts, int64 (N + 1,), memory-mapped."""
        offset = HEADER.size + 12 * self.num_sequences
        return np.memmap(self.idx_path, np.int64, "r", offset, (self.num_documents,))

    @property
    def num_tokens(self) -> int:
        return self.bin_path.stat().st_size // self.dtype.itemsize

    @cached_property
    def tokens(self) -> np.ndarray:
        """Every token id of the shard, in order: a read-only memory map of the .bin."""
        if self.num_tokens == 0:
            return np.zeros(0, dtype=self.dtype)
        return np.memmap(self.bin_path, self.dtype, "r")

    def read(self, start: int, stop: int) -> np.ndarray:
        """Tokens [start, stop) read into a new array through a file read, not the map: a pass over the
        whole shard (token counting) then leaves no file pages mapped into the process (its RSS stays flat)."""
        return np.fromfile(self.bin_path, self.dtype, stop - start, offset=start * self.dtype.itemsize)

    def sequence(self, i: int) -> np.ndarray:
        """The ids of sequence (document) i, a view of the map."""
        start = int(self.pointers[i]) // self.dtype.itemsize
        return self.tokens[start : start + int(self.lengths[i])]

    def token_offset_of_document(self, token_position: int) -> int:
        """The token offset of the first document starting at or after `token_position`."""
        i = int(np.searchsorted(self.pointers, token_position * self.dtype.itemsize, side="left"))
        return self.num_tokens if i >= self.num_sequences else int(self.pointers[i]) // self.dtype.itemsize

    def max_token_id(self, chunk_tokens: int = 1 << 24) -> int:
        """The largest id in the .bin, read in chunks through a buffer (never mapped: RSS stays flat)."""
        best, buffer = -1, np.empty(chunk_tokens, dtype=self.dtype)
        with open(self.bin_path, "rb", buffering=0) as f:
            while n := f.readinto(memoryview(buffer).cast("B")) // self.dtype.itemsize:
                best = max(best, int(buffer[:n].max()))
        return best
