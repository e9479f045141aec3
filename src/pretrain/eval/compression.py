"""A causal language model as a real, lossless text compressor: range coding of its next-token probabilities.

Cross-entropy is a code length: an entropy coder driven by the model's next-token distributions
stores a text in about sum(-log2 p(token | context)) bits (Shannon 1948; Deletang et al. 2024,
"Language Modeling Is Compression"). This module makes the claim literal: `pretrain compress`
writes such a file and `pretrain decompress` gets the exact bytes back.

How a file is coded:
- text -> tokens with the model's byte-level BPE, as in training (a special-token string such as
  wikitext's "<unk>" is that token, unless only plain text round-trips); the round trip is checked
  before coding, so any UTF-8 text comes back byte for byte;
- the tokens are cut into `streams` equal runs coded in lockstep, so each model call serves one
  token of every stream (encoder and decoder alike);
- each stream starts from EOS and sees a sliding context: when `window` (the model's max positions)
  tokens are cached, the last `window - stride` are re-encoded and decoding goes on;
- float32 logits -> integer frequencies summing to 2**24, at least 1 per token (pure float64 math),
  coded with constriction's range coder (32-bit words, 24-bit probabilities).

Decoding is bit-exact because the decoder repeats the encoder's computation exactly: same model
calls on the same tensors of the same shapes, deterministic algorithms, and the encoder's thread
count (stored in the header). It needs the same model files (fingerprint in the header) and the
same kind of CPU and torch build; a CRC-32 of the text turns any mismatch into an error, not
silently wrong output.
"""

from __future__ import annotations

import hashlib
import math
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import AutoModelForCausalLM, DynamicCache, PreTrainedTokenizerBase

from pretrain.config import ConfigError
from pretrain.data.fast_encode import batch_encoder
from pretrain.eval.plmz import MAX_STREAMS, CompressedFileError, Header, check_header, check_payload

__all__ = ["CompressedFileError", "Header", "compress_bytes", "decompress_bytes"]

PRECISION_BITS = 24  # constriction's default Categorical precision: probabilities are k / 2**24
MIN_STREAM_WINDOWS = 8  # a stream gets at least 8 context windows of tokens, so cold starts stay rare


@dataclass(frozen=True)
class CompressionReport:
    """Sizes and code lengths of one compression run."""

    original_bytes: int
    compressed_bytes: int
    header_bytes: int
    num_tokens: int
    cross_entropy_bits: float  # sum of -log2 p(token | context) under the float model, same contexts
    model_bytes: int  # model weights + config + tokenizer files
    seconds: float

    @property
    def bits_per_byte(self) -> float:
        return 8 * self.compressed_bytes / max(self.original_bytes, 1)

    @property
    def cross_entropy_bits_per_byte(self) -> float:
        return self.cross_entropy_bits / max(self.original_bytes, 1)


# --- model -----------------------------------------------------------------------------------


def load_causal_lm(model_dir: str | Path) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """A saved causal (or prefix-LM) model in float32 eval mode, with its tokenizer."""
    from pretrain.data.tokenizer import load_tokenizer
    from pretrain.eval.detect import check_model_dir, detect_objective

    path = Path(model_dir)
    check_model_dir(path, "a finished causal run")
    objective = detect_objective(path)
    if objective not in ("causal", "prefix_lm"):
        raise ConfigError(
            f"--model {path} is a {objective} model; give the output_dir of a causal or prefix-LM run"
        )
    tokenizer = load_tokenizer(str(path))
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=torch.float32, attn_implementation="sdpa"
        )
    except (ValueError, OSError) as err:
        raise ConfigError(
            f"--model {path} is not a causal language model ({type(err).__name__}); give a causal or prefix-LM run"
        ) from err
    return model.eval(), tokenizer


def model_fingerprint(model_dir: str | Path) -> tuple[bytes, int]:
    """(first 8 bytes of the sha256 over config, weights and tokenizer files, their total size in bytes)."""
    digest, size, root = hashlib.sha256(), 0, Path(model_dir)
    for path in [root / "config.json", root / "tokenizer.json", *sorted(root.glob("*.safetensors"))]:
        if path.is_file():
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
            size += path.stat().st_size
    return digest.digest()[:8], size


def max_positions(model: nn.Module) -> int:
    config = model.config
    return int(getattr(config, "n_positions", None) or config.max_position_embeddings)


@contextmanager
def deterministic_cpu(threads: int) -> Iterator[None]:
    """Run torch with `threads` CPU threads and deterministic algorithms; restore both afterwards."""
    previous = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(previous[0])
        torch.use_deterministic_algorithms(previous[1])


# --- tokens <-> text ---------------------------------------------------------------------------


def encode_text(
    tokenizer: PreTrainedTokenizerBase, text: str, special_tokens_in_text: str = "parse"
) -> list[int]:
    """Token ids of `text` that decode back to exactly `text`.

    First as training tokenized it (data.special_tokens_in_text): with 'parse', a special-token string
    in the text becomes that token (wikitext's literal "<unk>" is one cheap token the model knows;
    spelled out, it cost wikitext-2 test 0.6 bits per byte). Where that does not round-trip (e.g. a
    token that strips spaces), the special strings are coded as plain text instead.
    """
    for mode in ("parse", "plain") if special_tokens_in_text == "parse" else ("plain",):
        ids = batch_encoder(tokenizer, mode)([text])[0].tolist()  # the same encoder as training
        restored = decode_tokens(tokenizer, ids)
        if restored == text:
            break
    if restored != text:
        first = next(
            (i for i, (a, b) in enumerate(zip(text, restored, strict=False)) if a != b), len(restored)
        )
        raise ConfigError(
            f"the model's tokenizer does not reproduce this text (first difference at character {first}); "
            "compress needs a lossless tokenizer such as the byte-level BPE the recipes train"
        )
    return ids


def trained_special_tokens_in_text(model_dir: str | Path) -> str:
    """data.special_tokens_in_text of the run that saved `model_dir` ('parse' when it is not recorded)."""
    import yaml

    path = Path(model_dir) / "resolved_config.yaml"
    recorded = yaml.safe_load(path.read_text()) if path.is_file() else None
    return ((recorded or {}).get("data") or {}).get("special_tokens_in_text", "parse")


def decode_tokens(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> str:
    return tokenizer.backend_tokenizer.decode(ids, skip_special_tokens=False)


# --- the coder -----------------------------------------------------------------------------------


def compute_frequencies(logits: torch.Tensor) -> np.ndarray:
    """Integer frequencies (b, v) that sum to 2**PRECISION_BITS, each >= 1, from logits (b, v).

    Float64 math on identical inputs, so the encoder and the decoder get identical tables; the
    floor of 1 keeps every token codable (it costs v / 2**24 of probability mass, 0.05% for 8k).
    """
    total = 1 << PRECISION_BITS
    probs = torch.softmax(logits.double(), dim=-1)
    freq = torch.floor(probs * (total - logits.shape[-1])).long() + 1
    rows = torch.arange(freq.shape[0])
    freq[rows, probs.argmax(-1)] += total - freq.sum(-1)  # the rounding remainder goes to the mode
    return freq.numpy().astype(np.float64)


class ContextWindows:
    """Token streams advanced in lockstep through one model, each with a sliding context of `window` tokens."""

    def __init__(self, model: nn.Module, streams: int, length: int, window: int, stride: int, start_id: int):
        self.model, self.window, self.keep = model, window, window - stride
        self.history = torch.full((streams, length + 1), start_id, dtype=torch.long)  # (b, 1 + length)
        self.length = 1  # tokens of history so far (the start token)
        self.cache: DynamicCache | None = None
        self.cached = 0  # tokens whose keys/values are in the cache: the last `cached` of history

    @torch.no_grad()
    def next_logits(self) -> torch.Tensor:
        """Logits (b, v) of every stream's next token, given its history."""
        if self.cache is None or self.cached == self.window:
            # Out of positions: re-encode the most recent `keep` tokens as the new context.
            context = self.history[:, max(0, self.length - self.keep) : self.length]
            self.cache, self.cached = DynamicCache(), context.shape[1]
        else:
            context = self.history[:, self.length - 1 : self.length]
            self.cached += 1
        out = self.model(input_ids=context, past_key_values=self.cache, use_cache=True)
        return out.logits[:, -1].float()

    def push(self, tokens: torch.Tensor) -> None:
        """Append one token (b,) to every stream."""
        self.history[:, self.length] = tokens
        self.length += 1


# code(step, active, logits, freqs) codes the tokens of the active streams and returns all tokens (b,).
CodeStep = Callable[[int, np.ndarray, torch.Tensor, np.ndarray], np.ndarray]


def _run_streams(model: nn.Module, header: Header, start_id: int, code: CodeStep) -> None:
    """Drive the model over every stream position, in the same order for the encoder and the decoder."""
    length = -(-header.num_tokens // header.streams)
    lengths = np.clip(header.num_tokens - np.arange(header.streams) * length, 0, length)
    windows = ContextWindows(model, header.streams, length, header.window, header.stride, start_id)
    with deterministic_cpu(header.threads):
        for step in range(length):
            logits = windows.next_logits()
            tokens = code(step, lengths > step, logits, compute_frequencies(logits))
            windows.push(torch.from_numpy(tokens))


def default_streams(num_tokens: int, window: int) -> int:
    """Parallel streams for a text: as many as keep MIN_STREAM_WINDOWS windows each, at most MAX_STREAMS."""
    return int(np.clip(num_tokens // (MIN_STREAM_WINDOWS * window), 1, MAX_STREAMS))


def compress_bytes(
    data: bytes, model_dir: str | Path, streams: int = 0, stride: int = 0, threads: int = 1
) -> tuple[bytes, CompressionReport]:
    """Compress UTF-8 `data` with the model in `model_dir`; returns the file's bytes and a report.

    streams/stride of 0 mean default_streams and half the model's positions. One thread by default:
    the per-token model calls are small, and on a busy 2-core machine 2 threads measured 5x slower.
    """
    import constriction

    began = time.perf_counter()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"the input is not UTF-8 text (byte {err.start}); compress codes UTF-8 text"
        ) from err
    model, tokenizer = load_causal_lm(model_dir)
    ids = encode_text(tokenizer, text, trained_special_tokens_in_text(model_dir))
    fingerprint, model_bytes = model_fingerprint(model_dir)
    window = max_positions(model)
    stride = stride or max(1, window // 2)
    if threads < 1:
        raise ConfigError(f"threads={threads} must be at least 1")
    if not 0 < stride < window:
        raise ConfigError(
            f"stride={stride} must be between 1 and {window - 1} (the model has {window} positions)"
        )
    header = Header(
        fingerprint=fingerprint,
        crc32=zlib.crc32(data),
        num_bytes=len(data),
        num_tokens=len(ids),
        streams=max(1, min(streams or default_streams(len(ids), window), len(ids))),
        window=window,
        stride=stride,
        threads=threads,
    )
    start_id = tokenizer.eos_token_id
    length = -(-len(ids) // header.streams)
    grid = np.full(header.streams * length, start_id, dtype=np.int64)
    grid[: len(ids)] = ids
    grid = grid.reshape(header.streams, length)  # stream i: ids[i * length : (i + 1) * length]
    encoder = constriction.stream.queue.RangeEncoder()
    family = constriction.stream.model.Categorical(perfect=False)
    nats = 0.0

    def encode(step: int, active: np.ndarray, logits: torch.Tensor, freqs: np.ndarray) -> np.ndarray:
        nonlocal nats
        tokens = grid[:, step]
        encoder.encode(tokens[active].astype(np.int32), family, freqs[active])
        log_probs = torch.log_softmax(logits.double(), dim=-1)[torch.from_numpy(active)]
        nats -= float(log_probs.gather(1, torch.from_numpy(tokens[active])[:, None]).sum())
        return tokens

    _run_streams(model, header, start_id, encode)
    payload = encoder.get_compressed().astype("<u4").tobytes()
    head = replace(header, payload_crc32=zlib.crc32(payload)).to_bytes()
    blob = head + payload
    report = CompressionReport(
        original_bytes=len(data),
        compressed_bytes=len(blob),
        header_bytes=len(head),
        num_tokens=len(ids),
        cross_entropy_bits=nats / math.log(2),
        model_bytes=model_bytes,
        seconds=time.perf_counter() - began,
    )
    return blob, report


def decompress_bytes(blob: bytes, model_dir: str | Path) -> bytes:
    """The original bytes of a file written by compress_bytes with the same model."""
    import constriction

    header = Header.read(blob)
    payload = blob[Header.LAYOUT.size :]
    check_payload(header, payload)
    fingerprint, _ = model_fingerprint(model_dir)
    if fingerprint != header.fingerprint:
        raise CompressedFileError(
            f"it was compressed with a different model (fingerprint {header.fingerprint.hex()}, "
            f"{model_dir} has {fingerprint.hex()}); give the --model it was compressed with"
        )
    model, tokenizer = load_causal_lm(model_dir)
    check_header(header, len(payload), len(tokenizer), max_positions(model))
    words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
    decoder = constriction.stream.queue.RangeDecoder(words)
    family = constriction.stream.model.Categorical(perfect=False)
    start_id = tokenizer.eos_token_id
    streams: list[list[int]] = [[] for _ in range(header.streams)]

    def decode(step: int, active: np.ndarray, logits: torch.Tensor, freqs: np.ndarray) -> np.ndarray:
        tokens = np.full(header.streams, start_id, dtype=np.int64)
        tokens[active] = decoder.decode(family, freqs[active])
        for i in np.flatnonzero(active):
            streams[i].append(int(tokens[i]))
        return tokens

    try:
        _run_streams(model, header, start_id, decode)
    except AssertionError as err:  # constriction's signal for words no encoder could have written
        raise CompressedFileError(f"cannot decode it ({err}); the file is damaged") from err
    data = decode_tokens(tokenizer, [t for stream in streams for t in stream]).encode("utf-8")
    if len(data) != header.num_bytes or zlib.crc32(data) != header.crc32:
        raise CompressedFileError(
            "decoding did not reproduce the original (length or CRC-32 differs): the model's computation "
            "differs from the compressing machine's; decompress with the same torch build and CPU kind"
        )
    return data
