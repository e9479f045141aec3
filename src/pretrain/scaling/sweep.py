"""Scaling sweep: train a grid of causal models (sizes x token budgets), then fit L(N, D) to them.

`python recipes/scaling/sweep.py [SWEEP.yaml] [--sweep.key=value ...]` launches every grid point as
`python RECIPE TRAIN_CONFIG --model.hidden_size=.. --train.max_tokens=.. --train.output_dir=ROOT/NAME`,
then runs `pretrain fit` on the finished runs. Tiny models barely gain from a second torch thread, so
runs go `parallel` at a time with `threads_per_run` threads each; the first runs alone so that the
others find its tokenizer and tokenized data in the cache. A grid point whose directory already
holds eval_results.json is skipped, so an interrupted sweep resumes where it stopped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pretrain.config import ConfigError, parse_config
from pretrain.data.outputs import check_output, claim_output_dir


@dataclass(frozen=True)
class SweepSection:
    recipe: str = "recipes/causal/train.py"
    """Training entry point, run as `python RECIPE TRAIN_CONFIG --overrides...`."""
    train_config: str = "recipes/scaling/train.yaml"
    """Recipe config shared by every grid point (data, vocabulary, batch, schedule)."""
    output_root: str = "runs/scaling"
    """Each grid point trains into OUTPUT_ROOT/NAME."""
    sizes: tuple[str, ...] = ("32x2x2", "64x2x2", "128x2x4", "192x3x3", "256x4x4")
    """Model shapes as HIDDENxLAYERSxHEADS."""
    token_budgets: tuple[int, ...] = (200_000, 400_000, 800_000)
    """Training tokens D per run (train.max_tokens). Range [1, inf)."""
    plot: str = "runs/scaling/scaling_fit.png"
    """Where `pretrain fit` writes the iso-loss plot."""
    bootstrap: int = 200
    """Bootstrap resamples for the fitted constants' intervals. Range [0, inf)."""
    parallel: int = 2
    """Training runs at once (one per core with threads_per_run=1). Range [1, inf)."""
    threads_per_run: int = 1
    """Torch threads per run (OMP_NUM_THREADS). With more threads than free cores, every parallel
    region waits for a descheduled thread: at load 8 on 2 cores a 64-wide GPT-2 trained at 114
    tokens/s with 2 threads and 1,583 with 1. Range [1, inf)."""
    dry_run: bool = False
    """Print the training commands without running them."""


@dataclass(frozen=True)
class SweepConfig:
    sweep: SweepSection = field(default_factory=SweepSection)


@dataclass(frozen=True)
class GridPoint:
    """One training run of the sweep."""

    hidden_size: int
    num_layers: int
    num_heads: int
    tokens: int

    @property
    def name(self) -> str:
        """Directory name, e.g. h128_l2_d400k."""
        return f"h{self.hidden_size}_l{self.num_layers}_d{_short(self.tokens)}"


def _short(tokens: int) -> str:
    for unit, scale in (("M", 1_000_000), ("k", 1_000)):
        if tokens >= scale and tokens % (scale // 10) == 0:
            return f"{tokens / scale:g}{unit}"
    return str(tokens)


def parse_size(text: str) -> tuple[int, int, int]:
    """'128x2x4' -> (hidden_size, num_layers, num_heads)."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ConfigError(f"sweep.sizes entry {text!r} is not HIDDENxLAYERSxHEADS, e.g. 128x2x4")
    hidden, layers, heads = map(int, parts)
    if hidden % heads:
        raise ConfigError(
            f"sweep.sizes entry {text!r}: hidden size {hidden} is not divisible by {heads} heads"
        )
    return hidden, layers, heads


def grid_points(cfg: SweepSection) -> list[GridPoint]:
    """Every size x token budget, smallest model and budget first."""
    return [GridPoint(*parse_size(size), tokens) for size in cfg.sizes for tokens in cfg.token_budgets]


def train_command(cfg: SweepSection, point: GridPoint) -> list[str]:
    """The subprocess command that trains one grid point."""
    return [
        sys.executable,
        cfg.recipe,
        cfg.train_config,
        f"--model.hidden_size={point.hidden_size}",
        f"--model.num_layers={point.num_layers}",
        f"--model.num_heads={point.num_heads}",
        f"--train.max_tokens={point.tokens}",
        f"--train.output_dir={Path(cfg.output_root) / point.name}",
    ]


def _launch(cfg: SweepSection, point: GridPoint) -> subprocess.Popen:
    out = Path(cfg.output_root) / point.name
    claim_output_dir(out, "train", legacy=("resolved_config.yaml", "train.log"), what="train.output_dir")
    env = {**os.environ, "OMP_NUM_THREADS": str(cfg.threads_per_run), "TOKENIZERS_PARALLELISM": "false"}
    with open(out / "train.log", "w") as log:
        return subprocess.Popen(train_command(cfg, point), stdout=log, stderr=subprocess.STDOUT, env=env)


def run_sweep(cfg: SweepSection) -> list[Path]:
    """Train every unfinished grid point; returns the directories of all finished runs."""
    points = grid_points(cfg)
    if cfg.dry_run:
        print("\n".join(" ".join(train_command(cfg, p)) for p in points))
        return []
    pending = [p for p in points if not (Path(cfg.output_root) / p.name / "eval_results.json").is_file()]
    print(f"{len(points) - len(pending)} of {len(points)} runs finished earlier; training {len(pending)}")
    running: dict[GridPoint, tuple[subprocess.Popen, float]] = {}
    # Longest runs first, so the last ones to finish are short; but with nothing finished yet the
    # cheapest run goes first and alone: it trains the tokenizer and fills the data cache.
    pending.sort(key=lambda p: p.tokens * p.num_layers * p.hidden_size**2, reverse=True)
    alone = len(pending) == len(points)
    if alone:
        pending.insert(0, pending.pop())
    while pending or running:
        while pending and len(running) < (1 if alone else cfg.parallel):
            point = pending.pop(0)
            running[point] = (_launch(cfg, point), time.monotonic())
        time.sleep(2)
        for point, (proc, start) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[point]
            alone = False
            log = Path(cfg.output_root) / point.name / "train.log"
            status = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}, see {log})"
            print(f"{point.name}: {status} in {time.monotonic() - start:.0f} s", flush=True)
    return [
        Path(cfg.output_root) / p.name
        for p in points
        if (Path(cfg.output_root) / p.name / "eval_results.json").is_file()
    ]


def main(argv: list[str], default_config: str | Path | None = None) -> int:
    """Entry point of recipes/scaling/sweep.py: run the grid, then `pretrain fit` on its runs."""
    from pretrain.scaling.fitting import main as fit_main

    try:
        cfg = parse_config(SweepConfig, argv, default_config).sweep
        grid_points(cfg)
        check_output(cfg.output_root, [cfg.recipe, cfg.train_config], "sweep.output_root")
        for point in grid_points(cfg):  # every run directory is new, or one a sweep's training wrote
            claim_output_dir(
                Path(cfg.output_root) / point.name, "train", legacy=("resolved_config.yaml", "train.log"),
                what="train.output_dir", create=False,
            )  # fmt: skip
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finished = run_sweep(cfg)
    if cfg.dry_run:
        return 0
    Path(cfg.plot).parent.mkdir(parents=True, exist_ok=True)
    return fit_main([*map(str, finished), "--output", cfg.plot, "--bootstrap", str(cfg.bootstrap)])
