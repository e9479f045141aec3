"""Batch encoding for tokenize + pack: tiktoken where it gives the tokenizer's exact ids, else `tokenizers`.

Tokenizing spent ~80 % of tokenize + pack in the Rust `tokenizers` BPE; tiktoken runs BPE over the
same vocabulary several times faster (wikitext-2 valid, 8k BPE: ~2.1M vs ~0.30M tokens/s, one
thread each, other jobs sharing the 2 cores; ~3.3M on both idle cores). The two give the same ids only when tiktoken's rule,
"merge the adjacent pair whose merged token has the lowest id", picks the pairs the merge list
would, and when its pieces are split the same way. `batch_encoder` checks what that needs and keeps
`tokenizers` otherwise:

- no normalizer, and a ByteLevel pre-tokenizer with GPT-2's regex and no prefix space;
- a plain BPE model (no dropout, no subword prefix/suffix, no byte fallback) holding all 256 bytes;
- merged-token ids increasing with the merge index, each token made by exactly one merge, and every
  token being what BPE makes of its own bytes (tiktoken emits a piece that is a token whole);
- added tokens without single_word/normalized, none a prefix of another (both libraries split added
  tokens out of the text first, but pick among prefixes differently). An added token with
  lstrip/rstrip (the masked objective's `<mask>`) also eats the spaces beside it, which tiktoken
  cannot: the rare texts that contain one literally go through `tokenizers`.

Our trained tokenizers pass; others may or may not. Tests compare the ids of both paths on varied
text and every 7th Unicode code point.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tiktoken
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerBase
from transformers.convert_slow_tokenizer import bytes_to_unicode

logger = logging.getLogger(__name__)

# ByteLevel vocabularies spell byte b as the character bytes_to_unicode()[b]; chr(b) encodes back as latin-1.
_BYTE_LEVEL_TO_LATIN1 = str.maketrans({char: chr(byte) for byte, char in bytes_to_unicode().items()})
# tokenizers' ByteLevel pre-tokenizer regex (use_regex=True), the one GPT-2 introduced.
GPT2_SPLIT_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"


def batch_encoder(
    tokenizer: PreTrainedTokenizerBase, special_tokens_in_text: str = "parse"
) -> Callable[[list[str]], list[np.ndarray]]:
    """A function from texts to their ids (no special tokens added), through tiktoken where exact.

    special_tokens_in_text: 'parse', a special-token string in the text becomes that token; 'plain',
    it is ordinary text (data.special_tokens_in_text)."""
    backend = tokenizer.backend_tokenizer
    tokenizer_json = backend.to_str()
    spec = json.loads(tokenizer_json)
    plain = special_tokens_in_text == "plain"
    reason = _unsupported_pipeline(spec) or _unsupported_vocabulary(spec, backend)
    if reason:
        logger.debug("tokenizing with tokenizers, not tiktoken: %s", reason)
        return TokenizersBatchEncoder(tokenizer_json, plain)
    return TiktokenBatchEncoder(tokenizer_json, plain)


class TiktokenBatchEncoder:
    """Texts -> ids of a byte-level BPE that passed the checks above, computed by tiktoken.

    It pickles as the tokenizer's JSON, rebuilt on load: `datasets.map` hashes the function for its
    cache fingerprint and sends it to worker processes, and pickling tiktoken's own rank dict (sorted,
    in Python) takes ~50 ms for an 8k vocabulary, a third of the time encoding wikitext-2 valid takes.
    """

    def __init__(self, tokenizer_json: str, plain: bool = False) -> None:
        self.tokenizer_json, self.plain = tokenizer_json, plain
        spec = json.loads(tokenizer_json)
        added = {t["content"]: t["id"] for t in spec["added_tokens"]}
        ranks = {
            token.translate(_BYTE_LEVEL_TO_LATIN1).encode("latin-1"): i
            for token, i in spec["model"]["vocab"].items()
            if token not in added
        }
        self.encoding = tiktoken.Encoding(
            "pretrain-byte-level-bpe", pat_str=GPT2_SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens=added
        )
        stripping = [t["content"] for t in spec["added_tokens"] if t["lstrip"] or t["rstrip"]]
        self.stripped = () if plain else tuple(stripping)
        self.backend = Tokenizer.from_str(tokenizer_json) if self.stripped else None

    def __reduce__(self) -> tuple[type, tuple[str, bool]]:
        return (TiktokenBatchEncoder, (self.tokenizer_json, self.plain))

    def __call__(self, texts: list[str]) -> list[np.ndarray]:
        # tiktoken releases the GIL, so threads share the cores (as `tokenizers`' own pool does);
        # contiguous slices, a few per core: one task per text cost more than it saved on paragraphs.
        threads = os.cpu_count() or 1
        size = max(1, -(-len(texts) // (4 * threads)))
        slices = [texts[i : i + size] for i in range(0, len(texts), size)]
        with ThreadPoolExecutor(threads) as pool:
            return [ids for part in pool.map(self._encode_slice, slices) for ids in part]

    def _encode_slice(self, texts: list[str]) -> list[np.ndarray]:
        # parse: added tokens in the text ("<unk>" in wikitext) become their ids, as `tokenizers` does;
        # plain: they are ordinary text, as with `encode_special_tokens=True`.
        allowed = set() if self.plain else "all"
        return [
            _encode_with_tokenizers(self.backend, [t])[0]
            if self.stripped and any(token in t for token in self.stripped)
            else self.encoding.encode_to_numpy(t, allowed_special=allowed, disallowed_special=())
            for t in texts
        ]


def _unsupported_pipeline(spec: dict) -> str | None:
    """Why the tokenizer's normalizer, pre-tokenizer, model type or added tokens rule tiktoken out."""
    pre = spec["pre_tokenizer"] or {}
    model = spec["model"]
    if spec["normalizer"] is not None:
        return f"normalizer {spec['normalizer']['type']}"
    if (pre.get("type"), pre.get("add_prefix_space"), pre.get("use_regex")) != ("ByteLevel", False, True):
        return f"pre-tokenizer {pre}"
    if model["type"] != "BPE" or model["dropout"] or model["byte_fallback"]:
        return f"model {model['type']} (dropout/byte_fallback)"
    if model["continuing_subword_prefix"] or model["end_of_word_suffix"]:
        return "BPE with a subword prefix or suffix"
    for t in spec["added_tokens"]:
        if t["single_word"] or t["normalized"]:
            return f"added token {t['content']!r} with single_word/normalized"
    contents = [t["content"] for t in spec["added_tokens"]]
    if any(a != b and b.startswith(a) for a in contents for b in contents):
        return "an added token is a prefix of another"
    return None


def _unsupported_vocabulary(spec: dict, backend: Tokenizer) -> str | None:
    """Why tiktoken's lowest-id-first merging would differ from this merge list, if it would."""
    added = {t["content"] for t in spec["added_tokens"]}
    model = spec["model"]
    vocab = {token: i for token, i in model["vocab"].items() if token not in added}
    missing = [c for c in bytes_to_unicode().values() if c not in vocab]
    if missing:
        return f"{len(missing)} of the 256 bytes are not tokens"
    # -1: a merge making an added token (tokenizers itself refuses merges out of the vocabulary).
    merged_ids = [vocab.get(a + b, -1) for a, b in model["merges"]]
    if np.any(np.diff(merged_ids) <= 0):
        return "merged-token ids do not increase with the merge index (or two merges make one token)"
    if len(merged_ids) != len(vocab) - 256:
        return "some tokens are neither a byte nor made by a merge"
    if any([t.id for t in backend.model.tokenize(token)] != [i] for token, i in vocab.items()):
        return "a token is not what BPE makes of its own bytes"
    return None


class TokenizersBatchEncoder:
    """Texts -> ids through `tokenizers`, for tokenizers that tiktoken cannot reproduce.

    A copy of the backend, so that 'plain' (`encode_special_tokens`) leaves the tokenizer's own alone;
    it pickles as the JSON and the flag, which the JSON does not hold (worker processes need both).
    """

    def __init__(self, tokenizer_json: str, plain: bool = False) -> None:
        self.tokenizer_json, self.plain = tokenizer_json, plain
        self.backend = Tokenizer.from_str(tokenizer_json)
        self.backend.encode_special_tokens = plain

    def __reduce__(self) -> tuple[type, tuple[str, bool]]:
        return (TokenizersBatchEncoder, (self.tokenizer_json, self.plain))

    def __call__(self, texts: list[str]) -> list[np.ndarray]:
        return _encode_with_tokenizers(self.backend, texts)


def _encode_with_tokenizers(backend: Tokenizer, texts: list[str]) -> list[np.ndarray]:
    return [
        np.asarray(e.ids, dtype=np.int32) for e in backend.encode_batch_fast(texts, add_special_tokens=False)
    ]
