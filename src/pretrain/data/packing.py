"""Tokenization and packing: documents -> one token stream with EOS between documents -> fixed blocks.

Tokenization runs through `datasets.map` (batched, cached, multi-process when asked) calling a batch
encoder directly (`fast_encode`: tiktoken where it gives the tokenizer's exact ids, else the Rust
tokenizer's `encode_batch_fast`): it skips the attention masks and Python lists that run_clm's
`tokenizer(texts)` builds and `group_texts` then concatenates with `sum(list, [])`.
Packing never goes through Python lists: the tokenized Arrow column's flat values are the
concatenated stream and blocks are a reshape of it, so no token is dropped except the final partial
block. But `token_stream` joins the column's chunks with `np.concatenate`, which copies: this
in-memory path holds 4 bytes per token in every process. Corpora beyond memory are tokenized once
with `pretrain data tokenize` and read from memory-mapped shards (pretrain.data.shard_set), where a
block is a slice of the map and memory does not grow with the corpus.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import torch
from transformers import PreTrainedTokenizerBase

from pretrain.data.fast_encode import batch_encoder
from pretrain.data.text import DataError


def tokenize_dataset(
    ds: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    num_proc: int = 1,
    append_eos: bool = True,
    special_tokens_in_text: str = "parse",
) -> datasets.Dataset:
    """Add an `input_ids` column (documents tokenized without special tokens, EOS appended);
    special-token strings in the text parsed or plain (data.special_tokens_in_text)."""
    encode_texts = batch_encoder(tokenizer, special_tokens_in_text)
    suffix = [tokenizer.eos_token_id] if append_eos else []

    def encode(batch: dict[str, list[str]]) -> dict[str, list[np.ndarray]]:
        return {"input_ids": [_with_suffix(ids, suffix) for ids in encode_texts(batch["text"])]}

    return ds.map(
        encode,
        batched=True,
        batch_size=2000,
        num_proc=num_proc if num_proc > 1 else None,
        remove_columns=ds.column_names,
        features=datasets.Features({"input_ids": datasets.Sequence(datasets.Value("int32"))}),
        desc="tokenize",
    )


def _with_suffix(ids: np.ndarray, suffix: list[int]) -> np.ndarray:
    out = np.empty(len(ids) + len(suffix), dtype=np.int32)
    out[: len(ids)] = ids
    out[len(ids) :] = suffix
    return out


def token_stream(tokenized: datasets.Dataset) -> np.ndarray:
    """All `input_ids` of a tokenized dataset as one int32 array, in document order (zero-copy)."""
    column = tokenized.data.column("input_ids")
    if tokenized._indices is not None:  # a selected/shuffled view: materialise its order once
        column = tokenized.flatten_indices().data.column("input_ids")
    chunks = [
        c.flatten() if isinstance(c, pa.ListArray | pa.LargeListArray) else c.values for c in column.chunks
    ]
    if not chunks:
        return np.zeros(0, dtype=np.int32)
    return np.concatenate([c.to_numpy(zero_copy_only=False) for c in chunks]).astype(np.int32, copy=False)


@dataclass(frozen=True)
class PackedBlocks:
    """Fixed-length token blocks cut from the concatenated stream; `blocks[i]` is (seq_len,) int32."""

    blocks: np.ndarray
    num_tokens: int
    cache_files: tuple[str, ...] = ()  # the tokenized dataset's `datasets` cache files, if any
    fingerprint: str = ""  # that dataset's `datasets` fingerprint (names caches derived from it)

    @property
    def efficiency(self) -> float:
        """Fraction of tokenized tokens that landed in a block (only the final partial block is lost)."""
        return self.blocks.size / self.num_tokens if self.num_tokens else 0.0

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.from_numpy(np.asarray(self.blocks[i], dtype=np.int64))}

    def token_arrays(self) -> list[np.ndarray]:
        """The tokens trained on, as arrays to count (here: the blocks themselves)."""
        return [self.blocks]

    @property
    def counts_cache_path(self) -> Path | None:
        """Where token counts of these blocks are cached: beside the `datasets` cache, if there is one."""
        if not self.cache_files or not self.fingerprint:
            return None
        return (
            Path(self.cache_files[0]).parent / f"token-counts-{self.fingerprint}-{self.blocks.shape[1]}.npy"
        )


def pack_blocks(stream: np.ndarray, seq_len: int) -> PackedBlocks:
    """Cut a token stream into `len(stream) // seq_len` blocks of `seq_len` tokens (a view, no copy)."""
    n_blocks = len(stream) // seq_len
    if n_blocks == 0:
        raise DataError(
            f"the data has {len(stream)} tokens, fewer than one block of data.seq_len={seq_len}; "
            "give more text or lower --data.seq_len"
        )
    return PackedBlocks(
        blocks=stream[: n_blocks * seq_len].reshape(n_blocks, seq_len), num_tokens=len(stream)
    )


def document_positions(input_ids: torch.Tensor, eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token document index and position-within-document for packed rows (b, t).

    A document ends at (and includes) its EOS token, so the next token starts a new document.
    Returns (doc_ids, position_ids), both (b, t) int64.
    """
    is_eos = (input_ids == eos_id).long()
    # doc index increments *after* each EOS: exclusive cumulative sum.
    doc_ids = torch.cumsum(is_eos, dim=1) - is_eos
    t = input_ids.shape[1]
    arange = torch.arange(t, device=input_ids.device).expand_as(input_ids)
    # start index of each token's document = last position where a new document began.
    starts = torch.where(torch.cat([torch.ones_like(is_eos[:, :1]), is_eos[:, :-1]], dim=1).bool(), arange, 0)
    doc_start = torch.cummax(starts, dim=1).values
    return doc_ids, arange - doc_start


def block_attention_mask(doc_ids: torch.Tensor, causal: bool) -> torch.Tensor:
    """Boolean 4-D mask (b, 1, t, t), True where query i may attend key j: same document, and j <= i
    if causal. transformers' models take such a mask as-is (SDPA attention) for packed rows."""
    allowed = doc_ids[:, :, None] == doc_ids[:, None, :]
    if causal:
        t = doc_ids.shape[1]
        allowed = allowed & torch.ones(t, t, dtype=torch.bool, device=doc_ids.device).tril()
    return allowed[:, None]
