"""A trained causal model as a compressor, beside gzip/bz2/xz/zstd on the same text, round trip checked.

Compresses a text with `pretrain.eval.compression` (range coding with the model's next-token
probabilities), decompresses it again and checks the bytes, then prints the achieved bits per
byte, the model's cross-entropy bits per byte under the same contexts, the classical compressors
at their best levels, and the figure that counts the model files too; and both directions' speed.

Usage: python benchmarks/bench_compression.py [--model DIR] [--text PATH] [--prefix-bytes N] [--streams N]
Defaults: the wikitext model of docs/evaluation.md (runs/wikitext) on the first 100 KB of
wikitext-2 test; `--prefix-bytes 0` takes the whole file.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "runs" / "wikitext"
DEFAULT_TEXT = REPO.parent / "shared" / "data" / "wikitext-2" / "test.txt"


def read_prefix(path: Path, prefix_bytes: int) -> bytes:
    """The first `prefix_bytes` of a UTF-8 file (0 = all), shortened to a whole character."""
    data = path.read_bytes()
    if prefix_bytes:
        data = data[:prefix_bytes].decode("utf-8", errors="ignore").encode("utf-8")
    return data


def main(argv: list[str] | None = None) -> int:
    from pretrain.eval.compress_cli import format_report
    from pretrain.eval.compression import compress_bytes, decompress_bytes
    from pretrain.eval.harness import compression_baselines

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="a saved causal run (output_dir)")
    parser.add_argument("--text", type=Path, default=DEFAULT_TEXT, help="the UTF-8 text to compress")
    parser.add_argument("--prefix-bytes", type=int, default=100_000, help="compress only this much (0 = all)")
    parser.add_argument("--streams", type=int, default=0, help="parallel coding streams (0 = by length)")
    args = parser.parse_args(argv)
    for path, hint in ((args.model / "config.json", "--model DIR"), (args.text, "--text PATH")):
        if not path.is_file():
            print(
                f"bench_compression: {path} not found; pass {hint} (see docs/evaluation.md)", file=sys.stderr
            )
            return 2
    data = read_prefix(args.text, args.prefix_bytes)
    print(f"{args.text} ({len(data):,} bytes{' prefix' if args.prefix_bytes else ''}) with {args.model}")

    blob, report = compress_bytes(data, args.model, streams=args.streams)
    began = time.perf_counter()
    restored = decompress_bytes(blob, args.model)
    decode_seconds = time.perf_counter() - began
    print(format_report(report, compression_baselines(data)))
    print(
        f"round trip {'identical' if restored == data else 'DIFFERENT'}; compress {report.seconds:.0f} s "
        f"({report.num_tokens / report.seconds:.0f} tokens/s), decompress {decode_seconds:.0f} s "
        f"({report.num_tokens / decode_seconds:.0f} tokens/s)"
    )
    return 0 if restored == data else 1


if __name__ == "__main__":
    sys.exit(main())
