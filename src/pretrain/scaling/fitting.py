"""`pretrain fit`: fit L(N, D) = E + A / N^alpha + B / D^beta to finished runs.

Hoffmann et al. 2022 ("Training Compute-Optimal Large Language Models", approach 3, appendix D.2):
minimise the Huber loss (delta = 1e-3) between the log of the predicted and observed losses,

    log L(N, D) = LSE(a - alpha log N, b - beta log D, e),  with A = exp(a), B = exp(b), E = exp(e),

with L-BFGS from a grid of starting points, keeping the best. The objective is evaluated on the whole
grid first (it is cheap) and L-BFGS starts from the best few grid points, which finds the same
minimum far faster than one run per grid point. Intervals come from refitting bootstrap resamples of
the runs (Besiroglu et al. 2024, "Chinchilla Scaling: A replication attempt").

Each RUN directory holds `eval_results.json` with `eval_loss`, `num_parameters` (non-embedding N)
and `tokens_seen` (D); a `run_summary.json` with the last two keys overrides them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp
from threadpoolctl import threadpool_limits

from pretrain.config import bounded
from pretrain.scaling.planning import ScalingLaw, compute_optimal

HUBER_DELTA = 1e-3  # Hoffmann et al. 2022, appendix D.2
# Starting grid of Hoffmann et al. 2022, appendix D.2: alpha, beta in {0, .5, ..., 2},
# e in {-1, -.5, ..., 1}, a and b in {0, 5, ..., 25}.
GRID_ALPHA = GRID_BETA = np.arange(0.0, 2.01, 0.5)
GRID_E = np.arange(-1.0, 1.01, 0.5)
GRID_AB = np.arange(0.0, 25.01, 5.0)
NUM_STARTS = 16  # L-BFGS runs from the best grid points
BOOTSTRAP_GRID_STARTS = 3  # grid starts per bootstrap refit, besides the full fit
# Tight tolerances: stopping early underfits (Besiroglu et al. 2024 on Hoffmann et al.'s fit).
LBFGS_OPTIONS = {"ftol": 1e-14, "gtol": 1e-10, "maxiter": 1000}
# Bounds on (a, b, e, alpha, beta) that keep exp(a), exp(b), exp(e) finite and exponents >= 0 (a
# negative exponent would make loss grow with scale); real fits sit far inside them.
BOUNDS = [(-50.0, 200.0), (-50.0, 200.0), (-200.0, 10.0), (0.0, 4.0), (0.0, 4.0)]


@dataclass(frozen=True)
class RunPoint:
    """One finished run: its name, non-embedding parameters N, training tokens D and eval loss."""

    name: str
    params: float
    tokens: float
    loss: float


def load_run(run_dir: str | Path) -> RunPoint:
    """Read N, D and the eval loss of a finished run directory."""
    run_dir = Path(run_dir)
    results_path = run_dir / "eval_results.json"
    if not results_path.is_file():
        raise FileNotFoundError(f"{results_path} is missing; is {run_dir} a finished run?")
    record = _read_json(results_path)
    summary_path = run_dir / "run_summary.json"
    if summary_path.is_file():
        record.update(_read_json(summary_path))
    missing = [k for k in ("eval_loss", "num_parameters", "tokens_seen") if k not in record]
    if missing:
        raise ValueError(
            f"{run_dir}: no {missing} in eval_results.json or run_summary.json; is it a finished run?"
        )
    values = {k: record[k] for k in ("num_parameters", "tokens_seen", "eval_loss")}
    for key, value in values.items():
        number = value if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
        if not (math.isfinite(number) and number > 0):
            raise ValueError(
                f"{run_dir}: {key}={value!r} is not a positive finite number; leave this run out of the fit"
            )
    return RunPoint(run_dir.name, *(float(v) for v in values.values()))


def _read_json(path: Path) -> dict:
    """A JSON object from `path`; a malformed file is a ValueError naming it."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(
            f"{path} is not readable JSON ({type(err).__name__}); rewrite or remove it"
        ) from None
    if not isinstance(record, dict):
        raise ValueError(f"{path} holds {type(record).__name__}, not a JSON object; rewrite or remove it")
    return record


def _huber(residual: np.ndarray) -> np.ndarray:
    """Huber loss with HUBER_DELTA: quadratic near zero, linear beyond delta."""
    size = np.abs(residual)
    return np.where(size <= HUBER_DELTA, 0.5 * residual**2, HUBER_DELTA * (size - 0.5 * HUBER_DELTA))


def _objective(
    theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_loss: np.ndarray
) -> tuple[float, np.ndarray]:
    """Summed Huber loss of log-loss residuals and its gradient in theta = (a, b, e, alpha, beta)."""
    a, b, e, alpha, beta = theta
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])  # (3, runs)
    top = terms.max(axis=0)
    exp = np.exp(terms - top)
    total = exp.sum(axis=0)
    residual = top + np.log(total) - log_loss  # log-sum-exp minus observed log-loss
    slope = np.clip(residual, -HUBER_DELTA, HUBER_DELTA)  # d huber / d residual
    w = exp / total * slope  # chain rule through the log-sum-exp (softmax weights)
    grad = np.array([w[0].sum(), w[1].sum(), w[2].sum(), -(w[0] @ log_n), -(w[1] @ log_d)])
    return float(_huber(residual).sum()), grad


def _grid_starts(log_n: np.ndarray, log_d: np.ndarray, log_loss: np.ndarray, count: int) -> np.ndarray:
    """The `count` points of Hoffmann et al.'s grid with the lowest objective, best first."""
    grid = np.array(list(itertools.product(GRID_AB, GRID_AB, GRID_E, GRID_ALPHA, GRID_BETA)))  # (starts, 5)
    a, b, e, alpha, beta = (grid[:, i : i + 1] for i in range(5))
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.broadcast_to(e, (len(grid), len(log_n)))])
    losses = _huber(logsumexp(terms, axis=0) - log_loss).sum(axis=1)
    return grid[np.argsort(losses)[:count]]


def _law(theta: np.ndarray) -> ScalingLaw:
    a, b, e, alpha, beta = theta
    return ScalingLaw(
        E=float(np.exp(e)), A=float(np.exp(a)), B=float(np.exp(b)), alpha=float(alpha), beta=float(beta)
    )


def _theta(law: ScalingLaw) -> np.ndarray:
    return np.array([np.log(law.A), np.log(law.B), np.log(law.E), law.alpha, law.beta])


def fit_scaling_law(
    params: np.ndarray, tokens: np.ndarray, losses: np.ndarray, starts: np.ndarray | None = None
) -> ScalingLaw:
    """Hoffmann et al.'s approach 3: Huber on log-loss, L-BFGS from the best points of a grid.

    `starts` (rows of a, b, e, alpha, beta) replaces the grid search, e.g. to refit resamples.
    """
    log_n, log_d, log_loss = np.log(params), np.log(tokens), np.log(losses)
    if starts is None:
        starts = _grid_starts(log_n, log_d, log_loss, NUM_STARTS)
    # L-BFGS-B's tiny LAPACK calls wake every OpenBLAS thread; on a busy 2-core machine one fit took
    # 16 s with the default threads and 1.3 s with one.
    with threadpool_limits(1):
        results = [
            minimize(
                _objective,
                x0,
                args=(log_n, log_d, log_loss),
                jac=True,
                method="L-BFGS-B",
                bounds=BOUNDS,
                options=LBFGS_OPTIONS,
            )
            for x0 in starts
        ]
    return _law(min(results, key=lambda r: r.fun).x)


def bootstrap_intervals(
    points: list[RunPoint], law: ScalingLaw, samples: int = 200, level: float = 0.95, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """Percentile intervals of each constant over refits to runs resampled with replacement.

    Each refit starts from `law`, the fit to all runs, and from the best grid points for all runs,
    so that a constant the full fit drove to a degenerate value (say E -> 0) can still move.
    """
    data = np.array([[p.params, p.tokens, p.loss] for p in points])
    starts = np.vstack([_theta(law), _grid_starts(*np.log(data.T), BOOTSTRAP_GRID_STARTS)])
    rng = np.random.default_rng(seed)
    fits = []
    for _ in range(samples):
        sample = data[rng.integers(0, len(data), len(data))]
        fits.append(asdict(fit_scaling_law(*sample.T, starts=starts)))
    tail = 100 * (1 - level) / 2
    return {
        k: tuple(float(q) for q in np.percentile([f[k] for f in fits], [tail, 100 - tail])) for k in fits[0]
    }


def plot_fit(law: ScalingLaw, points: list[RunPoint], path: str | Path) -> None:
    """Write a PNG of the fitted iso-loss curves over (N, D), the runs, and the compute-optimal frontier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    params = np.array([p.params for p in points])
    tokens = np.array([p.tokens for p in points])
    losses = np.array([p.loss for p in points])
    grid_n = np.logspace(np.log10(params.min() / 3), np.log10(params.max() * 3), 200)
    grid_d = np.logspace(np.log10(tokens.min() / 3), np.log10(tokens.max() * 3), 200)
    mesh_n, mesh_d = np.meshgrid(grid_n, grid_d)
    predicted = law.loss(mesh_n, mesh_d)
    norm = Normalize(losses.min() - 0.1, losses.max() + 0.1)

    fig, ax = plt.subplots(figsize=(7, 5.5), dpi=110)
    levels = np.linspace(norm.vmin, norm.vmax, 12)
    contours = ax.contour(mesh_n, mesh_d, predicted, levels=levels, cmap="viridis", norm=norm, linewidths=1)
    ax.clabel(contours, fmt="%.2f", fontsize=7)
    ax.scatter(params, tokens, c=losses, cmap="viridis", norm=norm, edgecolors="black", s=60, zorder=3)
    for p in points:
        ax.annotate(
            f"{p.loss:.2f}", (p.params, p.tokens), textcoords="offset points", xytext=(6, 4), fontsize=7
        )
    budgets = 6 * mesh_n * mesh_d
    frontier = [
        compute_optimal(c, law) for c in np.logspace(np.log10(budgets.min()), np.log10(budgets.max()), 50)
    ]
    ax.plot(
        [a.params for a in frontier],
        [a.tokens for a in frontier],
        "r--",
        label="compute-optimal N, D (C = 6ND)",
    )
    ax.set(xscale="log", yscale="log", xlim=(grid_n[0], grid_n[-1]), ylim=(grid_d[0], grid_d[-1]))
    ax.set(xlabel="non-embedding parameters N", ylabel="training tokens D")
    ax.set_title(
        f"L = {law.E:.2f} + {law.A:.3g}/N^{law.alpha:.2f} + {law.B:.3g}/D^{law.beta:.2f}  (lines: fit; dots: runs)",
        fontsize=9,
    )
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=ax, label="eval loss (nats/token)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def format_fit(law: ScalingLaw, intervals: dict[str, tuple[float, float]], points: list[RunPoint]) -> str:
    """The constants with their intervals, then each run's observed and fitted loss."""
    lines = ["L(N, D) = E + A / N^alpha + B / D^beta", ""]
    for name, value in asdict(law).items():
        low, high = intervals.get(name, (float("nan"), float("nan")))
        lines.append(f"  {name:<6}{value:>12.4g}   95% bootstrap interval [{low:.4g}, {high:.4g}]")
    a = law.beta / (law.alpha + law.beta)
    lines += ["", f"compute-optimal scaling: N_opt ~ C^{a:.3f}, D_opt ~ C^{1 - a:.3f}", ""]
    lines.append(f"  {'run':<28}{'N':>11}{'D':>11}{'loss':>8}{'fit':>8}")
    for p in points:
        lines.append(
            f"  {p.name:<28}{p.params:>11.3e}{p.tokens:>11.3e}{p.loss:>8.3f}{law.loss(p.params, p.tokens):>8.3f}"
        )
    return "\n".join(lines)


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pretrain fit", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="finished run directories (eval_results.json inside)")
    parser.add_argument("--output", default="scaling_fit.png", help="where to write the iso-loss plot")
    parser.add_argument(
        "--bootstrap",
        type=bounded(int, "[0, 100000]"),
        default=200,
        help="bootstrap resamples for the intervals",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    """Entry point of `pretrain fit`."""
    args = _parse_args(argv)
    repeated = sorted(
        {run for run in args.runs if [Path(r).resolve() for r in args.runs].count(Path(run).resolve()) > 1}
    )
    if repeated:  # one run counted twice would weigh it double and fake the number of points
        print(
            f"error: runs {repeated} are given more than once; give each run directory once", file=sys.stderr
        )
        return 1
    finished = [run for run in args.runs if (Path(run) / "eval_results.json").is_file()]
    if not Path(args.output).resolve().parent.is_dir():
        print(
            f"error: --output {args.output}: its directory does not exist; create it first", file=sys.stderr
        )
        return 1
    try:
        points = sorted((load_run(run) for run in finished), key=lambda p: (p.params, p.tokens))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    skipped = len(args.runs) - len(points)
    if len(points) < 5:
        unused = [run for run in args.runs if run not in finished]
        named = f" ({len(unused)} without eval_results.json: {', '.join(unused[:3])}{', ...' if len(unused) > 3 else ''})"
        print(
            f"error: need at least 5 finished runs for 5 constants, got {len(points)}{named if unused else ''}",
            file=sys.stderr,
        )
        return 1
    law = fit_scaling_law(*np.array([[p.params, p.tokens, p.loss] for p in points]).T)
    intervals = bootstrap_intervals(points, law, samples=args.bootstrap) if args.bootstrap else {}
    plot_fit(law, points, args.output)
    if args.json:
        record = {
            "law": asdict(law),
            "intervals": intervals,
            "runs": [asdict(p) for p in points],
            "plot": args.output,
        }
        print(json.dumps(record))
    else:
        print(format_fit(law, intervals, points))
        print(
            f"\nplot: {args.output}"
            + (f" ({skipped} paths without eval_results.json skipped)" if skipped else "")
        )
    return 0
