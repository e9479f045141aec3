"""`pretrain data prepare --input PATH... --output DIR [--config YAML] [--section.key=value ...]`."""

from __future__ import annotations

import sys

from pretrain.config import ConfigError, parse_config, valid_keys
from pretrain.prepare.executors import run_prepare
from pretrain.prepare.pipeline import DataPipeConfig
from pretrain.prepare.report import render_summary

USAGE = """usage: pretrain data prepare --input PATH [PATH ...] --output DIR [--config YAML]
    [--executor local|slurm|ray|datasets] [--tasks N] [--workers W] [--logging-dir DIR]
    [--partition P --time HH:MM:SS --cpus-per-task N --mem-per-cpu-gb G] [--section.key=value ...]

Cleans raw text into DIR/<task>.jsonl.gz shards (datatrove executors; --executor datasets: a
`datasets.load_from_disk` dataset, and it also reads saved datasets and Hub ids NAME[:CONFIG]),
plus DIR/report.json and DIR/report.md. A rerun of a killed run redoes only unfinished tasks.
See docs/data.md. `pretrain data tokenize --help`: text -> Megatron-format token shards. Config keys:
"""


EXECUTOR_FLAGS = {
    "--executor": "name", "--tasks": "tasks", "--workers": "workers", "--logging-dir": "logging_dir",
    "--partition": "partition", "--time": "time", "--cpus-per-task": "cpus_per_task",
    "--mem-per-cpu-gb": "mem_per_cpu_gb",
}  # fmt: skip
"""Short flags for the `executor` config section: `--tasks 4` is `--executor.tasks=4`."""


def split_args(argv: list[str]) -> tuple[list[str], str, list[str]]:
    """Separate `--input PATH...`, `--output DIR` and `--config YAML` from the config overrides.

    Returns (inputs, output, argv for `parse_config`, with the YAML file first when given).
    """
    inputs, output, config, rest = [], "", [], []
    i = 0
    while i < len(argv):
        flag, eq, value = argv[i].partition("=")
        if flag in EXECUTOR_FLAGS:
            if not eq and (i + 1 >= len(argv) or argv[i + 1].startswith("--")):
                raise ConfigError(f"{flag} needs a value")
            rest.append(f"--executor.{EXECUTOR_FLAGS[flag]}={value if eq else argv[i + 1]}")
            i += 1 if eq else 2
            continue
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
        report = run_prepare(inputs, output, cfg)
    except ConfigError as err:
        print(f"error: pretrain data prepare: {err}", file=sys.stderr)
        return 2
    if report is None:
        print(f"submitted the Slurm jobs; when they finish the report is {output}/report.md")
        return 0
    print(render_summary(report))
    return 0
