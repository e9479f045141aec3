"""Tokenizers: load a named one, or train a byte-level BPE on the training text with `tokenizers`.

Every trained tokenizer has the same special tokens (<s>, <pad>, </s>, <unk>, <mask>) plus the
objective's extras (T5 sentinels, ...), so one tokenizer format serves every objective. The
objective chooses the post-processor (what `tokenizer(text)` adds around a text), because that is
what stock pipelines (fill-mask, text-generation) will do with the saved tokenizer.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import datasets
import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from pretrain.config import ConfigError

BASE_SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
# Training the BPE reads at most this much text: merges stabilise long before, and it bounds time/RAM.
_MAX_TOKENIZER_TRAINING_CHARS = 200_000_000


def _text_iterator(ds: datasets.Dataset, batch_size: int = 1000) -> Iterator[list[str]]:
    seen = 0
    for start in range(0, len(ds), batch_size):
        batch = ds[start : start + batch_size]["text"]
        yield batch
        seen += sum(map(len, batch))
        if seen >= _MAX_TOKENIZER_TRAINING_CHARS:
            return


def check_vocab_size(vocab_size: int, extra_special_tokens: tuple[str, ...] = ()) -> None:
    """Refuse a vocabulary smaller than the 256 byte tokens, the special tokens and one merge."""
    smallest = 256 + len(BASE_SPECIAL_TOKENS) + len(extra_special_tokens) + 1
    if vocab_size < smallest:
        raise ConfigError(
            f"a vocabulary of {vocab_size} tokens is too small for a byte-level BPE (256 bytes + "
            f"{smallest - 257} special tokens + 1 merge = {smallest} at least); give model.vocab_size "
            "(or --vocab-size) of 512 or more"
        )


def train_bpe_tokenizer(
    ds: datasets.Dataset, vocab_size: int, extra_special_tokens: tuple[str, ...] = ()
) -> PreTrainedTokenizerFast:
    """A byte-level BPE (GPT-2/RoBERTa style) trained on the `text` column of `ds`."""
    check_vocab_size(vocab_size, extra_special_tokens)
    specials = list(BASE_SPECIAL_TOKENS) + list(extra_special_tokens)
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=datasets.is_progress_bar_enabled(),  # off where datasets bars are (other ranks)
    )
    tok.train_from_iterator(_text_iterator(ds), trainer=trainer, length=len(ds))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        additional_special_tokens=list(extra_special_tokens) or None,
    )


def set_post_processor(tokenizer: PreTrainedTokenizerBase, kind: str) -> None:
    """What encoding a text adds: 'none' (causal), 'roberta' (<s> A </s>, trimmed offsets), 'eos' (A </s>)."""
    backend = tokenizer.backend_tokenizer
    if kind == "none":
        backend.post_processor = processors.ByteLevel(trim_offsets=True)
    elif kind == "roberta":
        backend.post_processor = processors.RobertaProcessing(
            ("</s>", tokenizer.eos_token_id),
            ("<s>", tokenizer.bos_token_id),
            trim_offsets=True,
            add_prefix_space=False,
        )
    elif kind == "eos":
        backend.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", tokenizer.eos_token_id)]
        )
    else:
        raise ValueError(f"unknown post-processor kind {kind!r}")


def build_tokenizer(
    name: str,
    train_ds: datasets.Dataset,
    vocab_size: int,
    cache_dir: Path,
    extra_special_tokens: tuple[str, ...] = (),
) -> PreTrainedTokenizerBase:
    """Load `name` if given, else train (or reuse a cached) BPE on `train_ds`.

    The cache key is the dataset fingerprint, the vocabulary size and the special tokens, so all
    processes of a run (and reruns on the same data) share one trained tokenizer.
    """
    if name:
        return load_tokenizer(name)
    if isinstance(train_ds, datasets.IterableDataset):
        raise ConfigError(
            "data.streaming=true needs --model.tokenizer_name=DIR: train one once with `pretrain tokenizer train`"
        )
    key = hashlib.sha256(f"{train_ds._fingerprint}|{vocab_size}|{extra_special_tokens}".encode()).hexdigest()[
        :16
    ]
    path = cache_dir / f"tokenizer-{key}"
    if not (path / "tokenizer.json").is_file():
        tokenizer = train_bpe_tokenizer(train_ds, vocab_size, extra_special_tokens)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tokenizer.save_pretrained(str(tmp))
        if not path.exists():
            os.replace(tmp, path)
    return AutoTokenizer.from_pretrained(str(path))


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
    "tokenizer.model",
)


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """A tokenizer from a local directory or the Hub; clear message when it cannot be found."""
    if os.path.isdir(name) and not any(os.path.isfile(os.path.join(name, f)) for f in TOKENIZER_FILES):
        # transformers would build a placeholder tokenizer from config.json alone
        raise ConfigError(
            f"{name} holds no tokenizer (no {' / '.join(TOKENIZER_FILES[:2])}); save the run's tokenizer there "
            "or point model.tokenizer_name at a tokenizer directory"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except Exception as err:  # noqa: BLE001 - OSError offline, ValueError for bad dirs, ...
        raise ConfigError(
            f"could not load tokenizer {name!r} ({type(err).__name__}); give a local tokenizer dir, "
            "or leave model.tokenizer_name empty to train one"
        ) from err
    if tokenizer.eos_token_id is None:
        raise ConfigError(f"tokenizer {name!r} has no eos token; packing needs one to separate documents")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def special_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """bos/eos/pad ids (bos falls back to eos for tokenizers without one)."""
    eos = tokenizer.eos_token_id
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    return {"bos": bos, "eos": eos, "pad": pad}


def compute_token_bytes(tokenizer: PreTrainedTokenizerBase) -> np.ndarray:
    """UTF-8 bytes of text each token id stands for, for bits-per-byte.

    Byte-level BPE tokens map 1:1 from characters of GPT-2's byte alphabet to bytes, so a token's
    byte count is its string length; other tokenizers fall back to decoding each id alone. The
    document separators packing inserts (eos, and bos/pad) stand for no text: 0 bytes. Any other
    special token reached the data as literal text (wikitext's "<unk>" markers are 6 % of its
    bytes) and decodes back to it, so it counts the bytes of its string.
    """
    vocab = tokenizer.get_vocab()
    size = max(len(tokenizer), max(vocab.values()) + 1)
    out = np.zeros(size, dtype=np.int64)
    separators = {tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.pad_token_id}
    special = set(tokenizer.all_special_ids) | {
        i for t, i in vocab.items() if t in tokenizer.added_tokens_encoder
    }
    byte_level = isinstance(tokenizer.backend_tokenizer.pre_tokenizer, pre_tokenizers.ByteLevel)
    for token, idx in vocab.items():
        if idx in separators:
            continue
        if idx in special:
            out[idx] = len(token.encode("utf-8"))
        else:
            out[idx] = len(token) if byte_level else len(tokenizer.decode([idx]).encode("utf-8"))
    return out
