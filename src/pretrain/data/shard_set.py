"""A shard set: the shards of one `pretrain data tokenize` output (or bare Megatron pairs) as one token stream.

The stream is never materialised: `slice(start, stop)` reads the memory maps of the one or two shards
the range touches, so a training block costs its own `seq_len` tokens and nothing else, whatever the
corpus size. `ShardBlocks` cuts the stream into fixed blocks the way `pack_blocks` cuts an array.

Our shard directories hold `meta.json` (format, tokenizer fingerprint and vocabulary size, dtype,
documents/tokens/largest id per shard, inputs, EOS and special-token policy) and `tokenizer/`, the
tokenizer they were made with, which a run uses when `--model.tokenizer_name` is not given.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from pretrain.data.shards import IndexedShard
from pretrain.data.streaming import load_stream_datasets
from pretrain.data.text import DataError, load_raw_datasets
from pretrain.settings import DataConfig

META_NAME = "meta.json"
FORMAT = "megatron-mmidx-v1"


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase, special_tokens_in_text: str) -> str:
    """A hash of everything that decides the ids of a text: vocabulary, merges, added tokens, normalizer,
    pre-tokenizer and the special-token policy; not the post-processor (shards hold no added specials)."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    kept = {k: spec.get(k) for k in ("model", "added_tokens", "normalizer", "pre_tokenizer")}
    kept["special_tokens_in_text"] = special_tokens_in_text
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


def is_shard_path(path: str) -> bool:
    """True for a tokenize output dir, a dir of .bin/.idx pairs, or one pair named by prefix/.bin/.idx."""
    p = Path(path)
    if p.is_dir():
        return (p / META_NAME).is_file() or any(p.glob("*.idx"))
    prefix = p.with_suffix("") if p.suffix in (".bin", ".idx") else p
    return prefix.with_name(prefix.name + ".idx").is_file()


class ShardSet:
    """Shards read as one token stream, optionally restricted to the token range [start, stop)."""

    def __init__(self, path: str | Path, shards: list[IndexedShard], meta: dict | None) -> None:
        self.path, self.shards, self.meta = Path(path), shards, meta
        self.offsets = np.cumsum([0] + [s.num_tokens for s in shards], dtype=np.int64)
        self.start, self.stop = 0, int(self.offsets[-1])
        if self.stop == 0:
            raise DataError(f"shard set {path} holds no tokens; tokenize some text into it")

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def name(self) -> str:
        return self.path.name.removesuffix(".bin").removesuffix(".idx")

    @property
    def tokenizer_dir(self) -> Path | None:
        """The tokenizer saved beside our shards, if any."""
        tok = self.path / "tokenizer"
        return tok if self.meta is not None and (tok / "tokenizer.json").is_file() else None

    def view(self, start: int, stop: int) -> ShardSet:
        """The same shards restricted to tokens [start, stop) of this view."""
        out = object.__new__(ShardSet)
        out.path, out.shards, out.meta, out.offsets = self.path, self.shards, self.meta, self.offsets
        out.start, out.stop = self.start + start, self.start + stop
        return out

    def slice(self, start: int, stop: int, mapped: bool = True) -> np.ndarray:
        """Tokens [start, stop) of this view: a view of one map, or two pieces joined (stop - start copied);
        mapped=False reads them from the files instead (for passes over everything: see IndexedShard.read)."""
        lo, hi = self.start + start, self.start + stop
        first = int(np.searchsorted(self.offsets, lo, side="right")) - 1
        pieces = []
        while lo < hi:
            shard, base = self.shards[first], int(self.offsets[first])
            take = min(hi, int(self.offsets[first + 1]))
            pieces.append(
                shard.tokens[lo - base : take - base] if mapped else shard.read(lo - base, take - base)
            )
            lo, first = take, first + 1
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def document_texts(self) -> datasets.Dataset:
        """The documents starting in this view, decoded with the shards' tokenizer (EOS dropped), as a `text`
        dataset that `datasets` writes to its Arrow cache in batches (never held in memory whole)."""
        if self.tokenizer_dir is None:
            raise DataError(
                f"shards {self.path} carry no tokenizer to decode them with; use our tokenize output"
            )
        pieces = []
        for k, shard in enumerate(self.shards):
            lo, hi = max(self.start, int(self.offsets[k])), min(self.stop, int(self.offsets[k + 1]))
            if lo < hi:
                pieces.append((str(shard.prefix), lo - int(self.offsets[k]), hi - int(self.offsets[k])))
        # The files' sizes and times join datasets' cache key: a rewritten shard set is decoded afresh.
        stamp = tuple((s.bin_path.stat().st_size, s.bin_path.stat().st_mtime_ns) for s in self.shards)
        kwargs = {"pieces": pieces, "tokenizer_dir": str(self.tokenizer_dir), "stamp": stamp}
        return datasets.Dataset.from_generator(_decoded_documents, gen_kwargs=kwargs)

    def split_at_document(self, fraction: float) -> tuple[ShardSet, ShardSet]:
        """(head, tail): the tail holds about `fraction` of the tokens, cut where a document starts."""
        cut = self.start + int(len(self) * (1.0 - fraction))
        k = int(np.searchsorted(self.offsets, cut, side="right")) - 1
        base = int(self.offsets[k])
        cut = base + self.shards[k].token_offset_of_document(cut - base) - self.start
        if cut <= 0 or cut >= len(self):
            raise DataError(
                f"shard set {self.path} has too few documents to hold out data.validation_fraction="
                f"{fraction}; give --data.validation_file=DIR"
            )
        return self.view(0, cut), self.view(cut, len(self))

    def check_tokenizer(self, tokenizer: PreTrainedTokenizerBase, special_tokens_in_text: str) -> None:
        """Refuse shards made with another tokenizer (ours) or holding ids outside the vocabulary (any)."""
        vocab = len(tokenizer)
        if self.meta is not None:
            ours = tokenizer_fingerprint(tokenizer, special_tokens_in_text)
            theirs = self.meta["tokenizer"]["fingerprint"]
            if ours != theirs:
                raise DataError(
                    f"shards {self.path} were tokenized with tokenizer {self.meta['tokenizer']['name']!r} "
                    f"(fingerprint {theirs}), but this run uses {tokenizer.name_or_path!r} ({ours}, "
                    f"special_tokens_in_text={special_tokens_in_text}); use the shards' tokenizer or retokenize"
                )
            largest = max(s["max_token_id"] for s in self.meta["shards"])
        else:
            largest = max(s.max_token_id() for s in self.shards)
        if largest >= vocab:
            raise DataError(
                f"shards {self.path} hold token id {largest}, not below the tokenizer's vocabulary of {vocab}; "
                "pass the --model.tokenizer_name the shards were made with"
            )


def _decoded_documents(
    pieces: list[tuple[str, int, int]], tokenizer_dir: str, stamp: tuple
) -> Iterator[dict[str, str]]:
    """{"text": ...} for each document starting in token range [lo, hi) of each shard (prefix, lo, hi)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    for prefix, lo, hi in pieces:
        shard = IndexedShard(prefix)
        starts = np.asarray(shard.pointers) // shard.dtype.itemsize
        first, last = np.searchsorted(starts, lo), np.searchsorted(starts, hi)
        for batch in range(int(first), int(last), 1000):
            ids = [shard.sequence(i) for i in range(batch, min(batch + 1000, int(last)))]
            ids = [x[:-1] if len(x) and x[-1] == tokenizer.eos_token_id else x for x in ids]
            for text in tokenizer.batch_decode([x.tolist() for x in ids], clean_up_tokenization_spaces=False):
                yield {"text": text}


def load_shard_set(path: str | Path) -> ShardSet:
    """Our tokenize output (meta.json checked against the files), a dir of bare pairs, or one pair."""
    p = Path(path)
    if not p.exists() and not p.with_name(p.name + ".idx").exists():
        raise DataError(f"shard path {p} does not exist; check the path or run `pretrain data tokenize`")
    if p.is_dir() and (p / META_NAME).is_file():
        meta = _read_meta(p)
        shards = [IndexedShard(p / s["name"]) for s in meta["shards"]]
        for shard, recorded in zip(shards, meta["shards"], strict=True):
            if (shard.num_sequences, shard.num_tokens) != (recorded["documents"], recorded["tokens"]):
                raise DataError(
                    f"shard {shard.prefix} holds {shard.num_sequences} documents / {shard.num_tokens} tokens but "
                    f"meta.json records {recorded['documents']} / {recorded['tokens']}; rerun `pretrain data tokenize`"
                )
        return ShardSet(p, shards, meta)
    if p.is_dir():
        prefixes = sorted(idx.with_suffix("") for idx in p.glob("*.idx"))
        if not prefixes:
            raise DataError(f"{p} holds no .bin/.idx shards (and no meta.json); run `pretrain data tokenize`")
        return ShardSet(p, [IndexedShard(x) for x in prefixes], None)
    prefix = p.with_suffix("") if p.suffix in (".bin", ".idx") else p
    return ShardSet(prefix, [IndexedShard(prefix)], None)


def _read_meta(directory: Path) -> dict:
    try:
        meta = json.loads((directory / META_NAME).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(
            f"{directory / META_NAME} is unreadable ({err}); rerun `pretrain data tokenize`"
        ) from err
    if meta.get("format") != FORMAT or not meta.get("shards"):
        raise DataError(
            f"{directory / META_NAME} is not a complete shard set (format {meta.get('format')!r}, "
            f"{len(meta.get('shards') or [])} shards); rerun `pretrain data tokenize`"
        )
    return meta


@dataclass(frozen=True)
class ShardBlocks:
    """Fixed blocks of `seq_len` tokens cut from a shard set's stream; `[i]` reads only block i.

    Like `PackedBlocks`: len, efficiency and {"input_ids": (seq_len,) int64} items; memory O(1) in the
    corpus size (the maps are paged in on access and evictable)."""

    source: ShardSet
    seq_len: int

    def __post_init__(self) -> None:
        if len(self) == 0:
            raise DataError(
                f"shards {self.source.path} hold {len(self.source)} tokens, fewer than one block of "
                f"{self.seq_len}; give more data or lower --data.seq_len"
            )

    @property
    def num_tokens(self) -> int:
        return len(self.source)

    @property
    def efficiency(self) -> float:
        return len(self) * self.seq_len / self.num_tokens

    def __len__(self) -> int:
        return len(self.source) // self.seq_len

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        ids = self.source.slice(i * self.seq_len, (i + 1) * self.seq_len)
        return {"input_ids": torch.from_numpy(ids.astype(np.int64))}

    def token_arrays(self, chunk_tokens: int = 1 << 24) -> Iterator[np.ndarray]:
        """The tokens trained on (the whole blocks), read from the files `chunk_tokens` at a time."""
        end = len(self) * self.seq_len
        for start in range(0, end, chunk_tokens):
            yield self.source.slice(start, min(end, start + chunk_tokens), mapped=False)

    @property
    def counts_cache_path(self) -> Path | None:
        """Token counts are cached in our shard directories (keyed by the view and block size)."""
        if self.source.meta is None:
            return None
        key = f"{self.source.meta['tokenizer']['fingerprint']}-{self.source.start}-{self.source.stop}-{self.seq_len}"
        return self.source.path / f"token-counts-{key}.npy"


def load_shard_datasets(cfg: DataConfig) -> tuple[ShardSet, ShardSet]:
    """(train, validation) shard sets of a run whose data.train_file is a shard path; validation is
    data.validation_file (also shards) or the last validation_fraction of the training tokens."""
    train = load_shard_set(cfg.train_file)
    if not cfg.validation_file:
        return train.split_at_document(cfg.validation_fraction)
    if not is_shard_path(cfg.validation_file):
        raise DataError(
            f"data.train_file={cfg.train_file} is a shard set but data.validation_file={cfg.validation_file} "
            "is not; tokenize the validation text too (`pretrain data tokenize`) or leave it empty"
        )
    return train, load_shard_set(cfg.validation_file)


def load_run_datasets(cfg: DataConfig) -> tuple:
    """(train, validation) of a run: shard sets when data.train_file names shards, a training stream with
    data.streaming, else raw text datasets."""
    if cfg.train_file and is_shard_path(cfg.train_file):
        return load_shard_datasets(cfg)
    if cfg.streaming:
        return load_stream_datasets(cfg)
    return load_raw_datasets(cfg)


def shard_tokenizer_name(train: ShardSet) -> str:
    """The tokenizer saved with our shards; a bare Megatron pair names none, so the run must."""
    if train.tokenizer_dir is None:
        raise DataError(
            f"shards {train.path} carry no tokenizer (bare .bin/.idx); pass --model.tokenizer_name=DIR, the "
            "tokenizer they were written with"
        )
    return str(train.tokenizer_dir)
