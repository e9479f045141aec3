"""Raw inputs named in data.sources / data.validation_sources become shard sets on first use.

A raw source is tokenized with the run's tokenizer by `tokenize_to_shards` into the cache
(`<cache>/sources/<name>-<key>`), keyed by the input's resolved path, size and modification time and
the tokenizer's fingerprint, so later runs (and every process of this one) read the same shards and a
changed file or tokenizer gets new ones. The tokenize step is itself resumable and atomic.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from pretrain.data.shard_set import is_shard_path, tokenizer_fingerprint
from pretrain.data.text import cache_root
from pretrain.prepare.io import InputConfig
from pretrain.prepare.tokenize import tokenize_to_shards
from pretrain.settings import DataConfig, SourceConfig


def source_shards(
    source: SourceConfig, tokenizer: PreTrainedTokenizerBase, cfg: DataConfig, progress: bool = True
) -> str:
    """The shard path of a source: itself when it is shards, else its cached tokenization (made now)."""
    if is_shard_path(source.path):
        return source.path
    path = Path(source.path).resolve()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    stamp = "|".join(f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    fingerprint = tokenizer_fingerprint(tokenizer, cfg.special_tokens_in_text)
    key = hashlib.sha256(f"{stamp}|{fingerprint}|{cfg.text_column}".encode()).hexdigest()[:16]
    out = cache_root(cfg) / "sources" / f"{source.label()}-{key}"
    tokenize_to_shards(
        [str(path)],
        out,
        tokenizer.name_or_path,
        num_proc=cfg.num_proc,
        input_cfg=InputConfig(text_column=cfg.text_column),
        special_tokens_in_text=cfg.special_tokens_in_text,
        progress=progress,
    )
    return str(out)
