"""The `.plmz` file format of `pretrain compress`: a fixed header, then the range coder's 32-bit words.

The header is untrusted input: `check_header` checks every field against the file's size, the
model and sane bounds before the decoder allocates anything, and a CRC-32 of the coded words tells a
damaged file apart from a model or machine that computes differently.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import astuple, dataclass
from typing import ClassVar

MAGIC = b"PLMZ"
FORMAT_VERSION = 2  # 2 added the CRC-32 of the coded words
MAX_STREAMS = 64
MAX_THREADS = 4096
MAX_TOKEN_BYTES = 1024  # no byte-level BPE token of ours decodes to more bytes than this
RANGE_CODER_SLACK_BITS = 64  # a range coder may end up to two 32-bit words short of the information


class CompressedFileError(ValueError):
    """A compressed file that cannot be decoded with the given model."""


@dataclass(frozen=True)
class Header:
    """Everything the decoder needs besides the model: sizes, layout and checks of payload and result."""

    fingerprint: bytes  # first 8 bytes of the sha256 of the model files
    crc32: int  # of the original bytes
    num_bytes: int
    num_tokens: int
    streams: int
    window: int  # tokens of context at most
    stride: int  # tokens coded between two re-encodings of the context
    threads: int  # torch CPU threads of the encoder; the decoder uses the same
    payload_crc32: int = 0  # of the coded words that follow the header

    # magic, format version, then the fields above, little-endian: 49 bytes.
    LAYOUT: ClassVar[struct.Struct] = struct.Struct("<4sB8sIQQHIIHI")

    def to_bytes(self) -> bytes:
        return self.LAYOUT.pack(MAGIC, FORMAT_VERSION, *astuple(self))

    @classmethod
    def read(cls, blob: bytes) -> Header:
        """The header at the start of `blob` (the coded words follow it)."""
        if blob[:4] != MAGIC:
            raise CompressedFileError("it is not a file written by `pretrain compress` (no PLMZ header)")
        if len(blob) < 5:
            raise CompressedFileError("its header is truncated: the file is damaged")
        if blob[4] != FORMAT_VERSION:
            raise CompressedFileError(f"it has format version {blob[4]}; this version reads {FORMAT_VERSION}")
        if len(blob) < cls.LAYOUT.size:
            raise CompressedFileError("its header is truncated: the file is damaged")
        _, _, *fields = cls.LAYOUT.unpack_from(blob)
        return cls(*fields)


def is_plmz(path) -> bool:
    """Whether the file at `path` starts with the PLMZ magic (a file `pretrain compress` wrote)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == MAGIC
    except OSError:
        return False


def check_payload(header: Header, payload: bytes) -> None:
    """The coded words must be whole 32-bit words and match the header's CRC-32."""
    if len(payload) % 4 or zlib.crc32(payload) != header.payload_crc32:
        raise CompressedFileError(
            "it is damaged (the checksum of its coded data does not match its header); use an intact copy"
        )


def check_header(header: Header, payload_bytes: int, vocab_size: int, positions: int) -> None:
    """Every header field within bounds set by the file's size and the model, or CompressedFileError."""

    def damaged(what: str) -> CompressedFileError:
        return CompressedFileError(f"its header is damaged ({what})")

    if not 1 <= header.streams <= MAX_STREAMS:
        raise damaged(f"{header.streams} streams, not 1..{MAX_STREAMS}")
    if header.window != positions:
        raise damaged(f"a {header.window}-token window, but the model has {positions} positions")
    if not 0 < header.stride < header.window:
        raise damaged(f"stride {header.stride}, not 1..{header.window - 1}")
    if not 1 <= header.threads <= MAX_THREADS:
        raise damaged(f"{header.threads} threads, not 1..{MAX_THREADS}")
    if header.streams > max(header.num_tokens, 1) or header.num_tokens > header.num_bytes:
        raise damaged(f"{header.num_tokens} tokens for {header.num_bytes} bytes in {header.streams} streams")
    if header.num_bytes > header.num_tokens * MAX_TOKEN_BYTES:
        raise damaged(f"{header.num_bytes} bytes from only {header.num_tokens} tokens")
    # Each token costs at least -log2 of the largest probability the frequency table can give
    # (every other token keeps >= 1 of 2**24), so the coded words bound the token count.
    min_bits = -math.log2(1 - (vocab_size - 1) / 2**24)
    if header.num_tokens * min_bits > 8 * payload_bytes + RANGE_CODER_SLACK_BITS:
        raise damaged(f"{header.num_tokens} tokens, more than {payload_bytes} bytes of coded data can hold")
