"""`pretrain data tokenize` and `pretrain tokenizer train`: the two once-per-corpus steps before training.

    pretrain tokenizer train --input PATH... --output TOK --vocab-size N [--sample-bytes B]
    pretrain data tokenize --input PATH... --output DIR --tokenizer TOK [--num-proc N] [--shard-tokens T]

Every bad input ends as one `error: ...` line and exit status 2; nothing is left under a final name.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from pretrain.config import ConfigError
from pretrain.data.outputs import claim_output_dir, mark_output_dir
from pretrain.data.text import DataError
from pretrain.data.tokenizer import (
    BASE_SPECIAL_TOKENS,
    check_vocab_size,
    set_post_processor,
    train_bpe_tokenizer,
)
from pretrain.prepare.io import InputConfig
from pretrain.prepare.tokenize import read_inputs, tokenize_to_shards


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one `error:` line (the project's convention)."""

    def error(self, message: str) -> None:
        print(f"error: {self.prog}: {message}", file=sys.stderr)
        raise SystemExit(2)


def _positive(kind: type):
    def parse(text: str):
        try:
            value = kind(float(text)) if kind is int and "e" in text.lower() else kind(text)
        except (ValueError, OverflowError):  # int(float("1e400")) overflows
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
        return value

    return parse


def _input_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", nargs="+", required=True, help="files, dirs, saved datasets or Hub ids")
    parser.add_argument("--output", required=True, help="directory to write (new, or this command's own)")
    parser.add_argument("--text-column", default="text", help="column holding the text (jsonl/parquet/...)")
    parser.add_argument(
        "--txt-sample-by",
        default="paragraph",
        choices=("line", "paragraph", "document"),
        help=".txt documents",
    )


def tokenize_main(argv: list[str]) -> int:
    """Entry point of `pretrain data tokenize`."""
    parser = _Parser(prog="pretrain data tokenize", description=__doc__)
    _input_args(parser)
    parser.add_argument(
        "--tokenizer", required=True, help="tokenizer dir (e.g. from `pretrain tokenizer train`)"
    )
    parser.add_argument(
        "--num-proc", type=_positive(int), default=1, help="worker processes (threads use all cores)"
    )
    parser.add_argument("--shard-tokens", type=_positive(int), default=100_000_000, help="tokens per shard")
    parser.add_argument("--special-tokens-in-text", default="parse", choices=("parse", "plain"))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        meta = tokenize_to_shards(
            args.input,
            args.output,
            args.tokenizer,
            shard_tokens=args.shard_tokens,
            num_proc=args.num_proc,
            input_cfg=InputConfig(text_column=args.text_column, txt_sample_by=args.txt_sample_by),
            special_tokens_in_text=args.special_tokens_in_text,
        )
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - started
    print(
        f"wrote {len(meta['shards'])} shards, {meta['documents']} documents, {meta['tokens']} tokens "
        f"({meta['dtype']}) to {args.output} in {seconds:.1f} s ({meta['tokens'] / seconds:,.0f} tokens/s)"
    )
    return 0


def train_tokenizer(
    inputs: list[str],
    output: str,
    vocab_size: int,
    sample_bytes: int = 200_000_000,
    input_cfg: InputConfig | None = None,
    extra_special_tokens: tuple[str, ...] = (),
    post_processor: str = "none",
) -> int:
    """Train the byte-level BPE the objectives use on at most `sample_bytes` of the inputs; returns the
    bytes sampled. The sample is a seeded shuffle of the documents, so every input is represented."""
    input_cfg = input_cfg or InputConfig()
    if os.path.exists(os.path.join(output, "tokenizer.json")):
        raise ConfigError(f"--output {output} already holds a tokenizer; choose a new directory")
    check_vocab_size(vocab_size, extra_special_tokens)
    claim_output_dir(output, "tokenizer train", inputs, create=False)
    with tempfile.TemporaryDirectory(prefix="pretrain-tokenizer-") as cache:
        ds = read_inputs(inputs, input_cfg, cache).shuffle(seed=0)
        rows, seen = _sample_rows(ds, sample_bytes)
        tokenizer = train_bpe_tokenizer(ds.select(range(rows)), vocab_size, extra_special_tokens)
    set_post_processor(tokenizer, post_processor)
    if len(tokenizer) < vocab_size:  # BPE stops when the sample has no pair left to merge
        print(
            f"warning: the sample allowed only {len(tokenizer):,} tokens of the {vocab_size:,} asked for "
            "(no pair left to merge); give more text for a larger vocabulary",
            file=sys.stderr,
        )
    tmp = f"{output.rstrip('/')}.tmp{os.getpid()}"
    tokenizer.save_pretrained(tmp)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    if os.path.isdir(output) and not os.listdir(output):
        os.rmdir(output)
    os.replace(tmp, output)
    mark_output_dir(output, "tokenizer train")
    return seen


def _sample_rows(ds, sample_bytes: int) -> tuple[int, int]:
    """(rows, bytes) of the longest prefix of `ds` holding at most about `sample_bytes` of text."""
    rows, seen = 0, 0
    for start in range(0, len(ds), 1000):
        for text in ds[start : start + 1000]["text"]:
            if seen >= sample_bytes:
                return rows, seen
            seen += len((text or "").encode("utf-8"))
            rows += 1
    return rows, seen


def tokenizer_main(argv: list[str]) -> int:
    """Entry point of `pretrain tokenizer train`."""
    if not argv or argv[0] != "train":
        print(
            "error: usage: pretrain tokenizer train --input PATH... --output DIR --vocab-size N",
            file=sys.stderr,
        )
        return 2
    parser = _Parser(prog="pretrain tokenizer train", description=__doc__)
    _input_args(parser)
    parser.add_argument("--vocab-size", type=_positive(int), required=True, help="tokens in the vocabulary")
    parser.add_argument(
        "--sample-bytes", type=_positive(int), default=200_000_000, help="train on at most B bytes"
    )
    parser.add_argument(
        "--extra-special-tokens",
        default="",
        help=f"comma-separated tokens beyond {' '.join(BASE_SPECIAL_TOKENS)}",
    )
    parser.add_argument("--post-processor", default="none", choices=("none", "roberta", "eos"))
    args = parser.parse_args(argv[1:])
    started = time.perf_counter()
    try:
        seen = train_tokenizer(
            args.input,
            args.output,
            args.vocab_size,
            args.sample_bytes,
            InputConfig(text_column=args.text_column, txt_sample_by=args.txt_sample_by),
            tuple(t for t in args.extra_special_tokens.split(",") if t),
            args.post_processor,
        )
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with open(os.path.join(args.output, "tokenizer.json"), encoding="utf-8") as f:
        size = len(json.load(f)["model"]["vocab"])
    print(
        f"trained a {size}-token BPE on {seen:,} bytes in {time.perf_counter() - started:.1f} s: {args.output}"
    )
    return 0
