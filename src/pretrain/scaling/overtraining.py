"""Over-training at a fixed size: one small causal model trained far past 20 tokens per parameter,
L(D) = E + B / D^beta fitted at fixed N, and where the usual allocations would have stopped.

`python recipes/analysis/overtraining/run.py [CONFIG.yaml] [--overtraining.key=value ...]` trains the
causal recipe for `tokens_per_param` x N tokens (N = non-embedding parameters, Kaplan et al. 2020, as
in `pretrain fit`) with `evaluations` evaluations along the way, fits L(D) to those past
`fit_min_tokens_per_param`, and reports:

- the loss where Hoffmann et al. 2022's 20 tokens per parameter would have stopped (measured and
  fitted), and how much lower the run ended;
- what the planner (pretrain.scaling.planning, Hoffmann et al.'s fitted L(N, D)) recommends for a
  model of this size: the training tokens at which N is compute-optimal, and the ones at which N is
  inference-optimal (Sardana et al. 2023) when the model will serve T tokens.

The learning rate is constant after warmup, so that every evaluation is at the same point of its
schedule; a cosine over the whole run would penalise early points, which did not decay (Hägele et al.
2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations").
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import brentq, minimize_scalar, nnls

from pretrain.config import ConfigError, parse_config
from pretrain.scaling.planning import TOKENS_PER_PARAM, compute_optimal, inference_optimal

BETA_GRID = np.linspace(0.01, 3.0, 300)  # the fit scans beta here, then refines between neighbours
FIT_STARTS = (10.0, 50.0, 100.0, 200.0)  # tokens per parameter: the refits of the sensitivity table


@dataclass(frozen=True)
class OvertrainingSection:
    recipe: str = "recipes/causal/train.py"
    """Training entry point, run as `python RECIPE TRAIN_CONFIG --overrides...` from the repository root."""
    train_config: str = "recipes/analysis/overtraining/train.yaml"
    """Recipe config of the run (model shape, data, batch, constant learning rate)."""
    output_dir: str = "runs/overtraining"
    """The run's output_dir; results.json and overtraining.png go here too."""
    train_file: str = ""
    """Training text (data.train_file); empty = the train config's (the embedded corpus by default)."""
    validation_file: str = ""
    """Held-out text (data.validation_file); empty = the train config's."""
    tokens_per_param: float = 500.0
    """Training length in tokens per non-embedding parameter (D = this x N)."""
    evaluations: int = 25
    """Evaluations along the run (evenly spaced in steps)."""
    fit_min_tokens_per_param: float = 50.0
    """Evaluations before this many tokens per parameter are left out of the fit (early transient);
    the report also refits from each of FIT_STARTS to show how much the constants depend on it."""
    inference_tokens_per_param: tuple[float, ...] = (1e3, 1e4, 1e5)
    """Inference demands T / N for which the planner's inference-optimal training length is reported."""
    threads: int = 1
    """Torch threads of the run (OMP_NUM_THREADS); tiny models gain nothing from a second."""

    def __post_init__(self) -> None:
        if not self.tokens_per_param > TOKENS_PER_PARAM:
            raise ConfigError(
                f"overtraining.tokens_per_param must exceed {TOKENS_PER_PARAM:g}, got {self.tokens_per_param}"
            )
        if not 0 <= self.fit_min_tokens_per_param < self.tokens_per_param:
            raise ConfigError(
                "overtraining.fit_min_tokens_per_param must be in [0, tokens_per_param), got "
                f"{self.fit_min_tokens_per_param}"
            )
        if self.evaluations < 4:
            raise ConfigError(f"overtraining.evaluations must be >= 4 (3 constants), got {self.evaluations}")
        if self.threads < 1:
            raise ConfigError(f"overtraining.threads must be >= 1, got {self.threads}")
        if any(t <= 0 for t in self.inference_tokens_per_param):
            raise ConfigError(
                "overtraining.inference_tokens_per_param must be positive, got "
                f"{list(self.inference_tokens_per_param)}"
            )


@dataclass(frozen=True)
class OvertrainingConfig:
    overtraining: OvertrainingSection = field(default_factory=OvertrainingSection)


@dataclass(frozen=True)
class DataLaw:
    """L(D) = E + B / D^beta at a fixed model size, loss in nats per token."""

    E: float
    B: float
    beta: float

    def loss(self, tokens: float | np.ndarray) -> float | np.ndarray:
        """Predicted loss after `tokens` training tokens."""
        return self.E + self.B / np.power(tokens, self.beta)

    def drop_per_doubling(self, tokens: float) -> float:
        """Loss saved by doubling D from `tokens`: L(D) - L(2D)."""
        return float(self.loss(tokens) - self.loss(2 * tokens))


def _linear_fit(x: np.ndarray, losses: np.ndarray) -> tuple[float, float, float]:
    """(E, B, squared error) of losses ~ E + B x by least squares with E, B >= 0 (a loss is never
    negative, and a negative B would make more data hurt)."""
    (e, b), residual = nnls(np.stack([np.ones_like(x), x], axis=1), losses)
    return float(e), float(b), float(residual**2)


def fit_data_law(tokens: np.ndarray, losses: np.ndarray) -> DataLaw:
    """Least-squares L(D) = E + B / D^beta: for a fixed beta, E and B are linear in x = (D/D0)^-beta.

    Scans beta on BETA_GRID, then refines it between the best point's neighbours (D0 = the first D
    keeps x of order one, so the linear solve is well conditioned).
    """
    tokens, losses = np.asarray(tokens, dtype=float), np.asarray(losses, dtype=float)
    if len(tokens) < 3:
        raise ValueError(f"fitting E, B and beta needs at least 3 points, got {len(tokens)}")
    scale = tokens.min()

    def error(beta: float) -> float:
        return _linear_fit((tokens / scale) ** -beta, losses)[2]

    best = int(np.argmin([error(b) for b in BETA_GRID]))
    low, high = BETA_GRID[max(best - 1, 0)], BETA_GRID[min(best + 1, len(BETA_GRID) - 1)]
    beta = float(minimize_scalar(error, bounds=(low, high), method="bounded", options={"xatol": 1e-10}).x)
    e, b, _ = _linear_fit((tokens / scale) ** -beta, losses)
    return DataLaw(E=e, B=float(b * scale**beta), beta=beta)


def planner_tokens(params: float, inference_tokens: float = 0.0) -> float:
    """Training tokens the planner gives a model of `params` parameters: the D of the budget C at which
    `compute_optimal(C)` (no inference) or `inference_optimal(C, T)` chooses exactly this size."""

    def size_gap(log_compute: float) -> float:
        compute = math.exp(log_compute)
        chosen = (
            inference_optimal(compute, inference_tokens) if inference_tokens else compute_optimal(compute)
        )
        return math.log(chosen.params / params)

    low = high = math.log(6 * TOKENS_PER_PARAM * params**2)
    while size_gap(low) > 0:
        low -= math.log(10)
    while size_gap(high) < 0:
        high += math.log(10)
    compute = math.exp(brentq(size_gap, low, high, xtol=1e-12))
    return compute / (6 * params)


def count_model_params(cfg: OvertrainingSection) -> tuple[int, int, int]:
    """(non-embedding N, all parameters, tokens per optimizer step) of the configured run."""
    from pretrain.objectives.causal import CausalLM
    from pretrain.objectives.models import build_decoder_config
    from pretrain.scaling.flops import count_params
    from pretrain.settings import make_run_config

    default = Path(cfg.recipe).with_name("config.yaml")
    run = parse_config(
        make_run_config(CausalLM.Config), [cfg.train_config], default if default.is_file() else None
    )
    ids = {"bos": 0, "eos": 0, "pad": 0}
    config = build_decoder_config(run.model, run.model.vocab_size, run.data.seq_len, ids)
    per_step = run.train.micro_batch_size * run.train.gradient_accumulation_steps * run.data.seq_len
    return count_params(config), count_params(config, include_embeddings=True), per_step


def train_command(cfg: OvertrainingSection, max_tokens: int, eval_steps: int) -> list[str]:
    """The subprocess command of the run."""
    data = [f"--data.train_file={cfg.train_file}"] if cfg.train_file else []
    data += [f"--data.validation_file={cfg.validation_file}"] if cfg.validation_file else []
    return [
        sys.executable,
        cfg.recipe,
        cfg.train_config,
        *data,
        f"--train.max_tokens={max_tokens}",
        f"--train.eval_steps={eval_steps}",
        f"--train.output_dir={cfg.output_dir}",
        "--train.overwrite_output_dir=true",
    ]


def train_run(cfg: OvertrainingSection) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Train the run (log in OUTPUT_DIR/train.log); its eval_history.jsonl lines and eval_results.json."""
    params, _, per_step = count_model_params(cfg)
    max_tokens = math.ceil(cfg.tokens_per_param * params)
    eval_steps = max(1, math.ceil(max_tokens / per_step) // cfg.evaluations)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(cfg.threads), "TOKENIZERS_PARALLELISM": "false"}
    start = time.monotonic()
    with open(out / "train.log", "w") as log:
        code = subprocess.call(
            train_command(cfg, max_tokens, eval_steps), stdout=log, stderr=subprocess.STDOUT, env=env
        )
    if code != 0:
        raise ConfigError(f"the training run failed (exit {code}); see {out / 'train.log'}")
    print(f"trained {max_tokens:,} tokens in {time.monotonic() - start:.0f} s", flush=True)
    history = [json.loads(line) for line in (out / "eval_history.jsonl").read_text().splitlines() if line]
    return history, json.loads((out / "eval_results.json").read_text())


def interpolate_loss(tokens: np.ndarray, losses: np.ndarray, at: float) -> float:
    """Measured loss at `at` tokens, linear in log D between the neighbouring evaluations."""
    if not tokens[0] <= at <= tokens[-1]:
        return float("nan")
    return float(np.interp(np.log(at), np.log(tokens), losses))


def summarize(
    cfg: OvertrainingSection, history: list[dict[str, Any]], results: dict[str, Any]
) -> dict[str, Any]:
    """results.json: the evaluations, the L(D) fit, and the stopping points of each allocation."""
    params, total = int(results["num_parameters"]), int(results["total_parameters"])
    tokens = np.array([h["tokens_seen"] for h in history], dtype=float)
    losses = np.array([h["eval_loss"] for h in history], dtype=float)
    fitted = tokens >= cfg.fit_min_tokens_per_param * params
    law = fit_data_law(tokens[fitted], losses[fitted])
    end = float(tokens[-1])

    def stop(name: str, at: float) -> dict[str, Any]:
        return {
            "name": name,
            "tokens": at,
            "tokens_per_param": at / params,
            "measured_loss": interpolate_loss(tokens, losses, at),
            "fitted_loss": float(law.loss(at)),
        }

    sensitivity = []
    for start in FIT_STARTS:
        chosen = tokens >= start * params
        if chosen.sum() >= 3:
            refit = fit_data_law(tokens[chosen], losses[chosen])
            rms = float(np.sqrt(np.mean((refit.loss(tokens[chosen]) - losses[chosen]) ** 2)))
            sensitivity.append(
                {
                    "from_tokens_per_param": start,
                    "points": int(chosen.sum()),
                    **asdict(refit),
                    "rms_residual": rms,
                }
            )
    stops = [
        stop("20 tokens/param (non-embedding N)", TOKENS_PER_PARAM * params),
        stop("20 tokens/param (all parameters)", TOKENS_PER_PARAM * total),
        stop("planner: compute-optimal for this N", planner_tokens(params)),
    ]
    stops += [
        stop(f"planner: inference-optimal, T = {t:g} N", planner_tokens(params, t * params))
        for t in cfg.inference_tokens_per_param
    ]
    stops.append(stop("end of run", end))
    return {
        "config": asdict(cfg),
        "non_embedding_params": params,
        "total_params": total,
        "evaluations": [
            {"tokens": float(d), "tokens_per_param": float(d) / params, "eval_loss": float(v)}
            for d, v in zip(tokens, losses, strict=True)
        ],
        "fit": {
            **asdict(law),
            "points": int(fitted.sum()),
            "rms_residual": float(np.sqrt(np.mean((law.loss(tokens[fitted]) - losses[fitted]) ** 2))),
        },
        "drop_per_doubling": {
            "at_20_tokens_per_param": law.drop_per_doubling(TOKENS_PER_PARAM * params),
            "at_end": law.drop_per_doubling(end),
        },
        "stops": stops,
        "fit_sensitivity": sensitivity,
    }


def format_results(report: dict[str, Any]) -> str:
    """The evaluations, the fit and the stopping points as plain-text tables."""
    fit = report["fit"]
    lines = [
        f"N = {report['non_embedding_params']:,} non-embedding parameters ({report['total_params']:,} in all)",
        "",
    ]
    lines.append(f"{'tokens':>12}{'tokens/N':>10}{'eval loss':>11}")
    lines += [
        f"{e['tokens']:>12,.0f}{e['tokens_per_param']:>10.1f}{e['eval_loss']:>11.4f}"
        for e in report["evaluations"]
    ]
    lines += [
        "",
        f"L(D) = {fit['E']:.4f} + {fit['B']:.4g} / D^{fit['beta']:.4f}  ({fit['points']} points, "
        f"rms residual {fit['rms_residual']:.4f})",
        f"loss saved by doubling D: {report['drop_per_doubling']['at_20_tokens_per_param']:.4f} at 20 tokens/N, "
        f"{report['drop_per_doubling']['at_end']:.4f} at the end",
        "",
        f"{'fit from tokens/N':>18}{'points':>8}{'E':>9}{'B':>11}{'beta':>8}{'rms':>8}",
        *(
            f"{f['from_tokens_per_param']:>18.0f}{f['points']:>8}{f['E']:>9.4f}{f['B']:>11.4g}{f['beta']:>8.4f}"
            f"{f['rms_residual']:>8.4f}"
            for f in report["fit_sensitivity"]
        ),
        "",
        f"{'stopping point':<44}{'tokens':>12}{'tokens/N':>10}{'measured':>10}{'fitted':>9}",
    ]
    for s in report["stops"]:
        lines.append(
            f"{s['name']:<44}{s['tokens']:>12,.0f}{s['tokens_per_param']:>10.1f}"
            f"{s['measured_loss']:>10.4f}{s['fitted_loss']:>9.4f}"
        )
    return "\n".join(lines)


def plot_results(report: dict[str, Any], path: Path) -> None:
    """Eval loss against training tokens, the fitted L(D) and the stopping points (a small PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tokens = np.array([e["tokens"] for e in report["evaluations"]])
    losses = np.array([e["eval_loss"] for e in report["evaluations"]])
    fit = report["fit"]
    law = DataLaw(fit["E"], fit["B"], fit["beta"])
    start = max(tokens.min(), report["config"]["fit_min_tokens_per_param"] * report["non_embedding_params"])
    grid = np.logspace(np.log10(start), np.log10(tokens.max()), 200)  # the fit, over the points it saw
    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=100)
    ax.plot(tokens, losses, "o", ms=4, label="evaluations")
    ax.plot(grid, law.loss(grid), "-", label=f"L(D) = {law.E:.2f} + {law.B:.3g}/D^{law.beta:.2f}")
    for s, color in zip(report["stops"][:-1], ("C3", "C5", "C2", "C4", "C6", "C7"), strict=False):
        if tokens.min() <= s["tokens"] <= tokens.max():
            ax.axvline(
                s["tokens"], color=color, ls="--", lw=1, label=f"{s['name']} ({s['tokens_per_param']:.0f}/N)"
            )
    ax.set(xscale="log", xlabel="training tokens D", ylabel="eval loss (nats/token)")
    ax.set_title(f"N = {report['non_embedding_params']:,} non-embedding parameters", fontsize=9)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str], default_config: str | Path | None = None) -> int:
    """Entry point of recipes/analysis/overtraining/run.py."""
    try:
        cfg = parse_config(OvertrainingConfig, argv, default_config).overtraining
        history, results = train_run(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    report = summarize(cfg, history, results)
    out = Path(cfg.output_dir)
    (out / "results.json").write_text(json.dumps(report, indent=2))
    plot_results(report, out / "overtraining.png")
    print(format_results(report))
    print(f"\nresults: {out / 'results.json'}, plot: {out / 'overtraining.png'}")
    return 0
