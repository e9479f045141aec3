"""Compute-optimal and inference-optimal allocations, and the `pretrain plan` output."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pretrain.scaling.flops import PEAK_FLOPS
from pretrain.scaling.planning import (
    HOFFMANN,
    build_plan,
    compute_optimal,
    gpu_hours_to_flops,
    inference_optimal,
    main,
    suggest_preset,
    tokens_per_param_optimal,
)

GOPHER_COMPUTE = 5.76e23  # Hoffmann et al. 2022: the Gopher / Chinchilla budget


def test_twenty_tokens_rule_at_gopher_compute():
    a = tokens_per_param_optimal(GOPHER_COMPUTE)
    assert a.params == pytest.approx(6.9e10, rel=0.01)
    assert a.tokens == pytest.approx(1.39e12, rel=0.01)
    assert a.tokens / a.params == pytest.approx(20)
    assert 6 * a.params * a.tokens == pytest.approx(GOPHER_COMPUTE)


def test_parametric_optimum_spends_the_budget_and_minimises_loss_on_the_isoflop_curve():
    best = compute_optimal(GOPHER_COMPUTE)
    assert 6 * best.params * best.tokens == pytest.approx(GOPHER_COMPUTE)
    sizes = best.params * np.logspace(-0.5, 0.5, 101)
    losses = [HOFFMANN.loss(n, GOPHER_COMPUTE / (6 * n)) for n in sizes]
    assert sizes[int(np.argmin(losses))] == pytest.approx(best.params, rel=0.03)
    assert best.loss <= min(losses) + 1e-12


def test_inference_optimal_without_inference_is_compute_optimal():
    a, b = inference_optimal(GOPHER_COMPUTE, 0.0), compute_optimal(GOPHER_COMPUTE)
    assert a.params == pytest.approx(b.params, rel=1e-3)
    assert a.tokens == pytest.approx(b.tokens, rel=1e-3)


def test_inference_demand_shrinks_the_model_at_the_same_loss_and_lower_total_cost():
    reference = compute_optimal(GOPHER_COMPUTE)
    sizes = []
    for demand in (1e12, 1e13, 1e14):
        a = inference_optimal(GOPHER_COMPUTE, demand)
        assert a.loss == pytest.approx(reference.loss, abs=1e-9)
        assert a.inference_flops == 2 * a.params * demand
        assert a.training_flops + a.inference_flops < reference.training_flops + 2 * reference.params * demand
        sizes.append(a.params)
    assert sizes[0] > sizes[1] > sizes[2]
    assert sizes[0] < reference.params


def test_gpu_hours_convert_through_peak_and_mfu():
    assert gpu_hours_to_flops(1000, "h100", 0.4) == 1000 * 3600 * PEAK_FLOPS["h100"] * 0.4
    with pytest.raises(ValueError, match="unknown gpu"):
        gpu_hours_to_flops(1, "abacus", 0.4)


def test_suggested_preset_is_the_nearest_in_log_size():
    assert suggest_preset(1e7, "gpt2", 8192, 256)["preset"] == "tiny"
    assert suggest_preset(1e12, "llama", 32000, 2048)["preset"] == "llama3-8b"  # the largest llama preset
    assert suggest_preset(1e12, "gpt2", 32000, 2048)["preset"] == "1b"  # Llama 3 shapes are llama-only
    assert suggest_preset(1.3e9, "llama", 128256, 2048)["preset"] == "llama3-1b"


def test_plan_recommends_inference_optimal_when_inference_is_given():
    assert build_plan(1e20)["method"] == "tokens_per_param_20"
    plan = build_plan(1e20, inference_tokens=1e12)
    assert plan["method"] == "inference_optimal"
    assert plan["params"] == plan["allocations"]["inference_optimal"]["params"]


def test_plan_json_is_one_object_with_params_and_tokens(capsys):
    assert main(["--compute", "5.76e23", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["params"] == pytest.approx(math.sqrt(5.76e23 / 120))
    assert plan["tokens"] == pytest.approx(20 * plan["params"])


def test_plan_table_from_gpu_hours(capsys):
    assert main(["--gpu-hours", "100", "--gpu", "a100", "--mfu", "0.5", "--inference-tokens", "1e11"]) == 0
    out = capsys.readouterr().out
    assert f"{100 * 3600 * 312e12 * 0.5:.3e}" in out
    assert "inference-optimal" in out and "--model.preset=" in out
