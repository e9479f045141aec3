"""`pretrain data prepare --input PATH... --output DIR [--config YAML] [--section.key=value ...]`."""

from __future__ import annotations

import sys

from pretrain.config import ConfigError, parse_config, valid_keys
from pretrain.prepare.pipeline import DataPipeConfig, prepare
from pretrain.prepare.report import render_summary

USAGE = """usage: pretrain data prepare --input PATH [PATH ...] --output DIR [--config YAML] [--section.key=value ...]

Cleans raw text (txt / jsonl / parquet files, directories of them, saved datasets, Hub ids NAME[:CONFIG])
into DIR, a `datasets.load_from_disk` dataset with a `text` column, plus DIR/report.json and DIR/report.md.
See docs/data.md. `pretrain data tokenize --help`: text -> Megatron-format token shards. Config keys:
"""


def split_args(argv: list[str]) -> tuple[list[str], str, list[str]]:
    """Separate `--input PATH...`, `--output DIR` and `--config YAML` from the config overrides.

    Returns (inputs, output, argv for `parse_config`, with the YAML file first when given).
    """
    inputs, output, config, rest = [], "", [], []
    i = 0
    while i < len(argv):
        flag, eq, value = argv[i].partition("=")
        if flag not in ("--input", "--output", "--config"):
            rest.append(argv[i])
            i += 1
            continue
        values = [value] if eq else []
        i += 1
        while not eq and i < len(argv) and not argv[i].startswith("--") and (flag == "--input" or not values):
            values.append(argv[i])
            i += 1
        if not values:
            raise ConfigError(f"{flag} needs a value")
        if flag == "--input":
            inputs += values
        elif flag == "--output":
            output = values[0]
        else:
            config = values
    if not inputs or not output:
        raise ConfigError("pass --input PATH [PATH ...] and --output DIR")
    return inputs, output, config + rest


def main(argv: list[str]) -> int:
    """Entry point of `pretrain data`; returns the process exit status."""
    if argv and argv[0] == "tokenize":
        from pretrain.prepare.tokenize_cli import tokenize_main

        return tokenize_main(argv[1:])
    wants_help = any(arg in ("-h", "--help") for arg in argv)
    if wants_help or not argv or argv[0] != "prepare":
        keys = "\n  ".join(valid_keys(DataPipeConfig))
        print(f"{USAGE}  {keys}", file=sys.stdout if wants_help else sys.stderr)
        return 0 if wants_help else 2
    try:
        inputs, output, rest = split_args(argv[1:])
        cfg = parse_config(DataPipeConfig, rest)
        report = prepare(inputs, output, cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(render_summary(report))
    return 0
