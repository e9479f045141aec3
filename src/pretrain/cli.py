"""The `pretrain` console script: one entry point, one subcommand per capability.

Each subcommand is a function `main(argv: list[str]) -> int` (or `module:function`) in its own
module; this table maps names to them so `pretrain --help` is instant (nothing heavy is imported until it runs).
"""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": (
        "pretrain.runner:cli_main",
        "Train an objective: pretrain train OBJECTIVE [CONFIG.yaml] [--section.key=value ...]",
    ),
    "eval": (
        "pretrain.eval.cli",
        "Evaluate a saved model: pretrain eval --model DIR [--data.validation_file=PATH] "
        "[--tasks NAME,... (lm-evaluation-harness)]",
    ),
    "probe": (
        "pretrain.train.probe",
        "Fine-tune a head on a saved encoder and from scratch: pretrain probe --model DIR --train-file F "
        "--validation-file F",
    ),
    "compress": (
        "pretrain.eval.compress_cli:compress_main",
        "Compress a text file with a causal model (range coding): pretrain compress --model DIR IN OUT",
    ),
    "decompress": (
        "pretrain.eval.compress_cli:decompress_main",
        "Restore a file written by compress: pretrain decompress --model DIR COMPRESSED OUT",
    ),
    "data": (
        "pretrain.prepare.cli",
        "Clean raw text: pretrain data prepare --input PATH... --output DIR; "
        "tokenize it into shards: pretrain data tokenize --input PATH... --output DIR --tokenizer TOK",
    ),
    "tokenizer": (
        "pretrain.prepare.tokenize_cli:tokenizer_main",
        "Train a byte-level BPE once: pretrain tokenizer train --input PATH... --output DIR --vocab-size N",
    ),
    "plan": (
        "pretrain.scaling.planning",
        "Compute-optimal N and D for a budget: pretrain plan --compute FLOPS [--inference-tokens T]",
    ),
    "fit": (
        "pretrain.scaling.fitting",
        "Fit L(N, D) = E + A/N^alpha + B/D^beta to finished runs: pretrain fit RUN_DIR ...",
    ),
    "push": (
        "pretrain.hub.push",
        "Push an output or checkpoint folder to the Hub: pretrain push DIR --repo-id user/name",
    ),
}


def _usage() -> str:
    lines = ["usage: pretrain SUBCOMMAND [ARGS ...]", "", "subcommands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(
            f"pretrain: unknown subcommand {name!r}; choose one of: {', '.join(SUBCOMMANDS)}", file=sys.stderr
        )
        return 2
    module, _, function = SUBCOMMANDS[name][0].partition(":")
    return getattr(importlib.import_module(module), function or "main")(rest)


if __name__ == "__main__":
    sys.exit(main())
