"""Fitting L(N, D): recovery of known constants, run loading, bootstrap intervals, the CLI's plot."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest

from pretrain.scaling.fitting import RunPoint, bootstrap_intervals, fit_scaling_law, load_run, main
from pretrain.scaling.planning import HOFFMANN


def _synthetic(n_range: tuple[float, float], d_range: tuple[float, float], k: int, seed: int) -> np.ndarray:
    """Losses from Hoffmann et al.'s constants on a k x k log grid, with 1% multiplicative noise."""
    params, tokens = (m.ravel() for m in np.meshgrid(np.logspace(*n_range, k), np.logspace(*d_range, k)))
    losses = HOFFMANN.loss(params, tokens) * (
        1 + 0.01 * np.random.default_rng(seed).standard_normal(params.size)
    )
    return np.stack([params, tokens, losses])


def test_fit_recovers_published_constants_from_noisy_points():
    # From CPU-sized models (1e5 params) to Chinchilla-sized (1e11): the wide lever arm is what pins
    # down A and alpha, which trade off against each other over a narrow range of N.
    law = fit_scaling_law(*_synthetic((5, 11), (6, 12), k=20, seed=0))
    for name, truth in asdict(HOFFMANN).items():
        assert getattr(law, name) == pytest.approx(truth, rel=0.05), name


def test_fit_is_exact_without_noise():
    params, tokens, _ = _synthetic((6, 10), (7, 11), k=6, seed=0)
    law = fit_scaling_law(params, tokens, HOFFMANN.loss(params, tokens))
    for name, truth in asdict(HOFFMANN).items():
        assert getattr(law, name) == pytest.approx(truth, rel=1e-3), name


def _write_run(run_dir, params: float, tokens: float, loss: float) -> None:
    run_dir.mkdir(parents=True)
    record = {
        "eval_loss": loss,
        "perplexity": float(np.exp(loss)),
        "num_parameters": params,
        "tokens_seen": tokens,
    }
    (run_dir / "eval_results.json").write_text(json.dumps(record))


def test_load_run_reads_eval_results_and_prefers_run_summary(tmp_path):
    _write_run(tmp_path / "a", 1e6, 2e7, 3.5)
    assert load_run(tmp_path / "a") == RunPoint("a", 1e6, 2e7, 3.5)
    (tmp_path / "a" / "run_summary.json").write_text(json.dumps({"tokens_seen": 4e7}))
    assert load_run(tmp_path / "a").tokens == 4e7
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "eval_results.json").write_text(json.dumps({"eval_loss": 3.0}))
    with pytest.raises(ValueError, match="num_parameters"):
        load_run(tmp_path / "b")


def test_bootstrap_intervals_bracket_the_fit():
    data = _synthetic((5, 7), (6, 8), k=4, seed=1)
    points = [RunPoint(str(i), *row) for i, row in enumerate(data.T)]
    law = fit_scaling_law(*data)
    intervals = bootstrap_intervals(points, law, samples=30)
    for name, value in asdict(law).items():
        low, high = intervals[name]
        assert low <= value <= high, name


def test_fit_cli_prints_constants_and_writes_the_plot(tmp_path, capsys):
    data = _synthetic((5, 7), (6, 8), k=3, seed=2)
    runs = []
    for i, (params, tokens, loss) in enumerate(data.T):
        _write_run(tmp_path / f"run{i}", params, tokens, loss)
        runs.append(str(tmp_path / f"run{i}"))
    (tmp_path / "unfinished").mkdir()
    png = tmp_path / "fit.png"
    assert (
        main([*runs, str(tmp_path / "unfinished"), "--output", str(png), "--bootstrap", "10", "--json"]) == 0
    )
    record = json.loads(capsys.readouterr().out)
    assert set(record["law"]) == {"E", "A", "B", "alpha", "beta"}
    assert len(record["runs"]) == 9 and set(record["intervals"]) == set(record["law"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_config_and_its_training_config_parse_strictly():
    from pretrain.config import parse_config
    from pretrain.objectives.causal import CausalLM
    from pretrain.scaling.sweep import SweepConfig, grid_points, train_command
    from pretrain.settings import make_run_config

    sweep = parse_config(SweepConfig, [], "recipes/scaling/sweep.yaml").sweep
    points = grid_points(sweep)
    assert len(points) == len(sweep.sizes) * len(sweep.token_budgets) >= 9
    assert len({p.name for p in points}) == len(points)
    # Every command must be a valid causal-recipe config: defaults < train.yaml < per-run overrides.
    run_config = make_run_config(CausalLM.Config)
    for point in points:
        config_file, *overrides = train_command(sweep, point)[2:]
        cfg = parse_config(run_config, [config_file, *overrides], "recipes/causal/config.yaml")
        assert (cfg.model.hidden_size, cfg.train.max_tokens) == (point.hidden_size, point.tokens)
        assert cfg.train.output_dir.endswith(point.name)


def test_sweep_grid_names_and_bad_sizes():
    from pretrain.config import ConfigError
    from pretrain.scaling.sweep import GridPoint, SweepSection, grid_points

    assert GridPoint(128, 2, 4, 400_000).name == "h128_l2_d400k"
    assert GridPoint(64, 2, 2, 1_500_000).name == "h64_l2_d1.5M"
    assert [p.tokens for p in grid_points(SweepSection(sizes=("64x2x2",), token_budgets=(1, 2)))] == [1, 2]
    for bad in ("64x2", "64x2x3", "axbxc"):
        with pytest.raises(ConfigError, match="sweep.sizes"):
            grid_points(SweepSection(sizes=(bad,)))
