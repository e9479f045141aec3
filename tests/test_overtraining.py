"""Over-training analysis: the L(D) fit recovers known constants, and the planner's stopping points."""

from __future__ import annotations

import numpy as np
import pytest

from pretrain.config import ConfigError
from pretrain.scaling.overtraining import (
    DataLaw,
    OvertrainingSection,
    fit_data_law,
    interpolate_loss,
    main,
    planner_tokens,
    summarize,
)
from pretrain.scaling.planning import compute_optimal, inference_optimal

TRUE = DataLaw(E=3.2, B=85.0, beta=0.35)


def test_fit_recovers_known_constants_from_synthetic_points():
    tokens = np.logspace(4.5, 6.3, 25)
    exact = fit_data_law(tokens, TRUE.loss(tokens))
    assert exact.E == pytest.approx(TRUE.E, rel=1e-6)
    assert exact.B == pytest.approx(TRUE.B, rel=1e-5)
    assert exact.beta == pytest.approx(TRUE.beta, rel=1e-6)

    noisy = TRUE.loss(tokens) + np.random.default_rng(0).normal(0, 0.002, len(tokens))
    fit = fit_data_law(tokens, noisy)
    assert fit.E == pytest.approx(TRUE.E, abs=0.1)
    assert fit.beta == pytest.approx(TRUE.beta, abs=0.05)
    assert np.abs(fit.loss(tokens) - TRUE.loss(tokens)).max() < 0.003


def test_planner_tokens_are_where_the_planner_picks_this_size():
    params = 5e4
    tokens = planner_tokens(params)
    assert compute_optimal(6 * params * tokens).params == pytest.approx(params, rel=1e-6)
    ratios = []
    for served in (1e3, 1e4, 1e5):
        d = planner_tokens(params, served * params)
        chosen = inference_optimal(6 * params * d, served * params)
        # At that budget the inference-optimal model is this size, trained on these tokens.
        assert chosen.params == pytest.approx(params, rel=1e-4)
        ratios.append(d / params)
    assert tokens / params < ratios[0] < ratios[1] < ratios[2]  # more serving, longer training


def test_summary_reports_the_20_tokens_per_param_stop():
    params, total = 2_000, 9_000
    tokens = np.linspace(4096, 500 * params, 30)
    history = [
        {"tokens_seen": int(d), "eval_loss": float(TRUE.loss(d)) + 2.0 * (d < 8 * params)} for d in tokens
    ]
    cfg = OvertrainingSection(fit_min_tokens_per_param=10)
    report = summarize(cfg, history, {"num_parameters": params, "total_parameters": total})
    assert report["fit"]["beta"] == pytest.approx(TRUE.beta, rel=1e-3)  # the early transient is left out
    assert report["fit"]["points"] == int((tokens >= 10 * params).sum())
    stops = {s["name"]: s for s in report["stops"]}
    chinchilla = stops["20 tokens/param (non-embedding N)"]
    assert chinchilla["tokens"] == 20 * params
    assert chinchilla["fitted_loss"] == pytest.approx(TRUE.loss(20 * params), rel=1e-4)
    assert stops["20 tokens/param (all parameters)"]["tokens_per_param"] == pytest.approx(20 * total / params)
    assert stops["end of run"]["measured_loss"] == pytest.approx(TRUE.loss(tokens[-1]))
    assert report["drop_per_doubling"]["at_end"] < report["drop_per_doubling"]["at_20_tokens_per_param"]
    assert np.isnan(interpolate_loss(tokens, tokens, 1.0))  # before the first evaluation: no measurement


def test_bad_settings_fail_with_one_error_line(capsys, tmp_path):
    with pytest.raises(ConfigError, match="must exceed 20"):
        OvertrainingSection(tokens_per_param=10)
    assert main([f"--overtraining.output_dir={tmp_path / 'run'}", "--overtraining.evaluations=2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: overtraining.evaluations")
    assert not (tmp_path / "run").exists()
