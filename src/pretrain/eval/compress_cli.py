"""`pretrain compress` and `pretrain decompress`: the command line of the model-driven range coder in
`pretrain.eval.compression`, and the comparison table it prints.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pretrain.config import ConfigError, bounded
from pretrain.data.outputs import check_output
from pretrain.eval.compression import CompressedFileError, CompressionReport, compress_bytes, decompress_bytes
from pretrain.eval.plmz import MAX_STREAMS, MAX_THREADS, is_plmz


def format_report(report: CompressionReport, baselines: dict[str, float]) -> str:
    """The comparison table: achieved and ideal bits per byte, classical compressors, model size."""
    rows = [
        ("model, range coded (achieved)", report.bits_per_byte),
        ("model cross-entropy (ideal code length)", report.cross_entropy_bits_per_byte),
        *((f"{name.removesuffix('_bits_per_byte')} (best level)", bpb) for name, bpb in baselines.items()),
        (
            "model, incl. the model files",
            8 * (report.compressed_bytes + report.model_bytes) / max(report.original_bytes, 1),
        ),
    ]
    lines = [f"{'':<42}{'bits/byte':>10}", *(f"{name:<42}{bpb:>10.4f}" for name, bpb in rows)]
    if report.original_bytes == 0:  # each rate would be header or model bytes over no bytes at all
        lines = ["bits/byte: none for an empty input (the file holds 0 bytes)"]
    lines += [
        f"original {report.original_bytes:,} bytes, {report.num_tokens:,} tokens; compressed "
        f"{report.compressed_bytes:,} bytes (header {report.header_bytes}); model files "
        f"{report.model_bytes:,} bytes; {report.seconds:.1f} s",
    ]
    return "\n".join(lines)


def _parse_args(prog: str, argv: list[str], first: str, second: str, coding: bool) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog, description="Lossless text compression with a causal language model (range coding)."
    )
    parser.add_argument("--model", required=True, help="a saved causal or prefix-LM run (output_dir)")
    parser.add_argument(first, type=Path)
    parser.add_argument(second, type=Path)
    parser.add_argument("--force", action="store_true", help="overwrite the output file if it exists")
    if coding:
        parser.add_argument(
            "--streams",
            type=bounded(int, f"[0, {MAX_STREAMS}]"),
            default=0,
            help="parallel streams (0 = by length)",
        )
        parser.add_argument(
            "--stride",
            type=bounded(int, "[0, inf)"),
            default=0,
            help="context stride in tokens (0 = half the window)",
        )
        parser.add_argument(
            "--threads",
            type=bounded(int, f"[1, {MAX_THREADS}]"),
            default=1,
            help="torch CPU threads (decoding uses the same)",
        )
    return parser.parse_args(argv)


def _check_paths(source: Path, target: Path, force: bool, model: str, coded_target: bool) -> None:
    """Refuse a missing input, an output that is an input (or inside the model), a directory, an
    existing file without --force and, for compress, replacing a file that compress did not write."""
    if not source.is_file():
        raise ConfigError(f"{source} is not a file; give the file to read first, then the file to write")
    check_output(target, [source, model], "output")
    if target.is_dir():
        raise ConfigError(f"the output {target} is a directory; give a file name to write")
    if not target.parent.is_dir():
        raise ConfigError(
            f"the output's directory {target.parent} does not exist; create it or choose another path"
        )
    if target.exists() and not force:
        raise ConfigError(f"{target} already exists; pass --force to overwrite it or choose another name")
    if target.exists() and coded_target and not is_plmz(target):
        raise ConfigError(
            f"{target} is not a file written by pretrain compress; --force replaces only those: choose another name"
        )


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file, so a failure never leaves a partial file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def compress_main(argv: list[str]) -> int:
    """`pretrain compress --model DIR IN OUT`: compress a UTF-8 text file and print the comparison."""
    from pretrain.eval.harness import compression_baselines

    args = _parse_args("pretrain compress", argv, "input", "output", coding=True)
    try:
        _check_paths(args.input, args.output, args.force, args.model, coded_target=True)
        data = args.input.read_bytes()
        blob, report = compress_bytes(
            data, args.model, streams=args.streams, stride=args.stride, threads=args.threads
        )
        write_atomically(args.output, blob)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(format_report(report, compression_baselines(data)))
    return 0


def decompress_main(argv: list[str]) -> int:
    """`pretrain decompress --model DIR COMPRESSED OUT`: restore the exact original bytes."""
    args = _parse_args("pretrain decompress", argv, "compressed", "output", coding=False)
    try:
        _check_paths(args.compressed, args.output, args.force, args.model, coded_target=False)
        data = decompress_bytes(args.compressed.read_bytes(), args.model)
        write_atomically(args.output, data)
    except CompressedFileError as err:
        print(f"error: {args.compressed} cannot be decompressed: {err}", file=sys.stderr)
        return 1
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {len(data):,} bytes to {args.output}")
    return 0
