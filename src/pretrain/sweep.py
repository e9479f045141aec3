"""Scaling sweep: train a grid of causal models (sizes x token budgets), then fit L(N, D) to them.

`python recipes/scaling/sweep.py [SWEEP.yaml] [--sweep.key=value ...]` launches every grid point as
`python RECIPE TRAIN_CONFIG --model.hidden_size=.. --train.max_tokens=.. --train.output_dir=ROOT/NAME`,
one after another (each run already uses every core), then runs `pretrain fit` on the finished runs.
A grid point whose directory already holds eval_results.json is skipped, so an interrupted sweep
resumes where it stopped.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pretrain.config import ConfigError, parse_config


@dataclass(frozen=True)
class SweepSection:
    recipe: str = "recipes/causal/train.py"
    """Training entry point, run as `python RECIPE TRAIN_CONFIG --overrides...`."""
    train_config: str = "recipes/scaling/train.yaml"
    """Recipe config shared by every grid point (data, vocabulary, batch, schedule)."""
    output_root: str = "runs/scaling"
    """Each grid point trains into OUTPUT_ROOT/NAME."""
    sizes: tuple[str, ...] = ("64x2x2", "128x2x4", "192x3x3", "256x4x4")
    """Model shapes as HIDDENxLAYERSxHEADS."""
    token_budgets: tuple[int, ...] = (200_000, 400_000, 800_000)
    """Training tokens D per run (train.max_tokens)."""
    plot: str = "runs/scaling/scaling_fit.png"
    """Where `pretrain fit` writes the iso-loss plot."""
    bootstrap: int = 200
    """Bootstrap resamples for the fitted constants' intervals."""
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


def run_sweep(cfg: SweepSection) -> list[Path]:
    """Train every unfinished grid point; returns the directories of all finished runs."""
    finished = []
    points = grid_points(cfg)
    for i, point in enumerate(points, 1):
        out = Path(cfg.output_root) / point.name
        command = train_command(cfg, point)
        if cfg.dry_run:
            print(" ".join(command))
            continue
        if (out / "eval_results.json").is_file():
            print(f"[{i}/{len(points)}] {point.name}: finished earlier, skipped")
            finished.append(out)
            continue
        out.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        with open(out / "train.log", "w") as log:
            code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
        status = "done" if code == 0 else f"FAILED (exit {code}, see {out / 'train.log'})"
        print(f"[{i}/{len(points)}] {point.name}: {status} in {time.monotonic() - start:.0f} s", flush=True)
        if code == 0:
            finished.append(out)
    return finished


def main(argv: list[str], default_config: str | Path | None = None) -> int:
    """Entry point of recipes/scaling/sweep.py: run the grid, then `pretrain fit` on its runs."""
    from pretrain.fitting import main as fit_main

    try:
        cfg = parse_config(SweepConfig, argv, default_config).sweep
        grid_points(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finished = run_sweep(cfg)
    if cfg.dry_run:
        return 0
    Path(cfg.plot).parent.mkdir(parents=True, exist_ok=True)
    return fit_main([*map(str, finished), "--output", cfg.plot, "--bootstrap", str(cfg.bootstrap)])
