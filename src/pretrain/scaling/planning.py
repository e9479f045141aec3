"""`pretrain plan`: how big a model and how many tokens for a compute budget.

Three allocations of a training budget of C FLOPs, with C = 6 N D (Kaplan et al. 2020):

- the 20-tokens-per-parameter rule (Hoffmann et al. 2022, table 3): D = 20 N, so
  C = 6 * N * 20 N and N* = sqrt(C / 120), D* = 20 N*;
- the minimum of Hoffmann et al.'s parametric loss L(N, D) = E + A / N^alpha + B / D^beta under
  C = 6 N D (their approach 3, equation 4), which has a closed form;
- with `--inference-tokens T`, the allocation that reaches the same loss as the second one with the
  fewest training + inference FLOPs, 6 N D + 2 N T (Sardana et al. 2023, "Beyond Chinchilla-Optimal:
  Accounting for Inference in Language Model Scaling Laws"): a smaller model trained longer.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, replace

from scipy.optimize import minimize_scalar

from pretrain.config import bounded
from pretrain.scaling.flops import PEAK_FLOPS, count_params, training_flops_per_token

TOKENS_PER_PARAM = 20.0  # Hoffmann et al. 2022, table 3: ~20 tokens per parameter at every scale


@dataclass(frozen=True)
class ScalingLaw:
    """L(N, D) = E + A / N^alpha + B / D^beta, loss in nats per token (Hoffmann et al. 2022, eq. 2)."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def loss(self, params: float, tokens: float) -> float:
        """Predicted loss of a model of `params` parameters trained on `tokens` tokens."""
        return self.E + self.A / params**self.alpha + self.B / tokens**self.beta

    def tokens_for_loss(self, params: float, loss: float) -> float:
        """Training tokens a model of `params` parameters needs to reach `loss` (inf if it never does)."""
        gap = loss - self.E - self.A / params**self.alpha
        return (self.B / gap) ** (1 / self.beta) if gap > 0 else math.inf


# Hoffmann et al. 2022, equation 10 (approach 3 fit on their runs).
HOFFMANN = ScalingLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)


@dataclass(frozen=True)
class Allocation:
    """A model size and training length with its predicted loss and FLOP bill."""

    params: float
    tokens: float
    loss: float
    training_flops: float
    inference_flops: float = 0.0


def _allocation(law: ScalingLaw, params: float, tokens: float, inference_tokens: float = 0.0) -> Allocation:
    loss = law.loss(params, tokens)
    return Allocation(params, tokens, loss, 6 * params * tokens, 2 * params * inference_tokens)


def gpu_hours_to_flops(gpu_hours: float, gpu: str, mfu: float) -> float:
    """Training FLOPs from GPU-hours on a device in PEAK_FLOPS at a model FLOPs utilisation."""
    if gpu not in PEAK_FLOPS:
        raise ValueError(f"unknown gpu {gpu!r}; choose one of {sorted(PEAK_FLOPS)}")
    return gpu_hours * 3600 * PEAK_FLOPS[gpu] * mfu


def tokens_per_param_optimal(compute: float, law: ScalingLaw = HOFFMANN) -> Allocation:
    """N* = sqrt(C / (6 * 20)), D* = 20 N*: the rule of thumb (not (C/6)^0.5, which breaks D = 20N)."""
    params = math.sqrt(compute / (6 * TOKENS_PER_PARAM))
    return _allocation(law, params, TOKENS_PER_PARAM * params)


def compute_optimal(compute: float, law: ScalingLaw = HOFFMANN) -> Allocation:
    """argmin L(N, D) s.t. 6ND = C: N = G (C/6)^a, D = (C/6)^b / G (Hoffmann et al. eq. 4)."""
    a = law.beta / (law.alpha + law.beta)
    g = (law.alpha * law.A / (law.beta * law.B)) ** (1 / (law.alpha + law.beta))
    params = g * (compute / 6) ** a
    return _allocation(law, params, compute / (6 * params))


def inference_optimal(compute: float, inference_tokens: float, law: ScalingLaw = HOFFMANN) -> Allocation:
    """Same loss as `compute_optimal(compute)` with the least 6 N D + 2 N T FLOPs (Sardana et al.)."""
    target = compute_optimal(compute, law)
    # Smallest model that can reach the target loss at all (with infinite data).
    log_min = math.log(law.A / (target.loss - law.E)) / law.alpha

    def total_flops(log_params: float) -> float:
        params = math.exp(log_params)
        return 6 * params * law.tokens_for_loss(params, target.loss) + 2 * params * inference_tokens

    # More inference only ever shrinks the model, so the optimum lies below the compute-optimal size.
    span = (log_min + 1e-9, math.log(target.params) + 1e-6)
    best = minimize_scalar(total_flops, bounds=span, method="bounded", options={"xatol": 1e-10})
    params = math.exp(best.x)
    return _allocation(law, params, law.tokens_for_loss(params, target.loss), inference_tokens)


def suggest_preset(params: float, family: str, vocab_size: int, seq_len: int) -> dict[str, float | str]:
    """The preset whose total parameter count is nearest `params` in log space."""
    from pretrain.objectives.models import PRESETS, build_decoder_config
    from pretrain.settings import ModelConfig

    ids = {"bos": 0, "eos": 0, "pad": 0}
    candidates = []
    for name in PRESETS:
        if name.startswith("llama") and family != "llama":
            continue  # the Llama 3 shapes exist for the llama family only
        config = build_decoder_config(ModelConfig(family=family, preset=name), vocab_size, seq_len, ids)
        total = count_params(config, include_embeddings=True)
        candidates.append((abs(math.log(total / params)), name, total, config))
    _, name, total, config = min(candidates)
    return {
        "preset": name,
        "family": family,
        "params": total,
        "non_embedding_params": count_params(config),
        "flops_per_token": training_flops_per_token(config, seq_len),
    }


def build_plan(
    compute: float,
    inference_tokens: float = 0.0,
    family: str = "gpt2",
    vocab_size: int = 50257,
    seq_len: int = 2048,
) -> dict:
    """Every allocation of `compute`, the recommended one (`params`, `tokens`) and a preset near it."""
    allocations = {
        "tokens_per_param_20": tokens_per_param_optimal(compute),
        "hoffmann_fit": compute_optimal(compute),
    }
    method = "tokens_per_param_20"
    if inference_tokens > 0:
        allocations["inference_optimal"] = inference_optimal(compute, inference_tokens)
        method = "inference_optimal"
    # Every row pays for the same inference so that the totals compare.
    allocations = {
        n: replace(a, inference_flops=2 * a.params * inference_tokens) for n, a in allocations.items()
    }
    chosen = allocations[method]
    preset = suggest_preset(chosen.params, family, vocab_size, seq_len)
    preset["tokens_at_budget"] = chosen.training_flops / preset["flops_per_token"]
    return {
        "compute": compute,
        "inference_tokens": inference_tokens,
        "method": method,
        "params": chosen.params,
        "tokens": chosen.tokens,
        "loss": chosen.loss,
        "allocations": {name: asdict(a) for name, a in allocations.items()},
        "suggested_config": preset,
    }


_LABELS = {
    "tokens_per_param_20": "20 tokens/param rule",
    "hoffmann_fit": "Hoffmann et al. fit",
    "inference_optimal": "inference-optimal",
}


def format_plan(plan: dict) -> str:
    """A human-readable table of a `build_plan` result."""
    lines = [f"compute budget: {plan['compute']:.3e} FLOPs (C = 6 N D)", ""]
    lines.append(
        f"{'':<22}{'params N':>11}{'tokens D':>11}{'D/N':>7}{'loss':>8}{'train FLOPs':>13}{'total FLOPs':>13}"
    )
    for name, a in plan["allocations"].items():
        total = a["training_flops"] + a["inference_flops"]
        lines.append(
            f"{_LABELS[name]:<22}{a['params']:>11.3e}{a['tokens']:>11.3e}{a['tokens'] / a['params']:>7.1f}"
            f"{a['loss']:>8.3f}{a['training_flops']:>13.3e}{total:>13.3e}"
        )
    if plan["inference_tokens"]:
        lines.append(f"(total FLOPs add 2 N per inference token, {plan['inference_tokens']:.3e} tokens)")
    s = plan["suggested_config"]
    lines += [
        "",
        f"recommended ({_LABELS[plan['method']]}): N = {plan['params']:.3e}, D = {plan['tokens']:.3e}, "
        f"expected loss {plan['loss']:.3f} nats/token",
        f"nearest preset: --model.family={s['family']} --model.preset={s['preset']} "
        f"({s['params']:.3e} params, {s['non_embedding_params']:.3e} non-embedding, "
        f"{s['flops_per_token']:.3e} training FLOPs/token)",
        f"  at this budget it trains on {s['tokens_at_budget']:.3e} tokens",
    ]
    ratio = s["params"] / plan["params"]
    if not 0.5 <= ratio <= 2:
        lines.append(
            f"  note: the preset is {ratio:.2g}x the recommended size; set model.hidden_size/num_layers"
        )
    return "\n".join(lines)


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pretrain plan", description=__doc__.splitlines()[0])
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument(
        "--compute", type=bounded(float, "(0, 1e40]"), help="training budget in FLOPs, e.g. 5.76e23"
    )
    budget.add_argument(
        "--gpu-hours",
        type=bounded(float, "(0, 1e12]"),
        help="training budget in GPU-hours (with --gpu, --mfu)",
    )
    parser.add_argument("--gpu", default="h100", choices=sorted(PEAK_FLOPS), help="device for --gpu-hours")
    parser.add_argument(
        "--mfu", type=bounded(float, "(0, 1]"), default=0.4, help="model FLOPs utilisation for --gpu-hours"
    )
    parser.add_argument(
        "--inference-tokens",
        type=bounded(float, "[0, 1e30]"),
        default=0.0,
        help="tokens the model will serve",
    )
    parser.add_argument("--family", default="gpt2", choices=["gpt2", "llama"], help="family of the preset")
    parser.add_argument(
        "--vocab-size",
        type=bounded(int, "[1, 10000000]"),
        default=50257,
        help="vocabulary of the suggested preset",
    )
    parser.add_argument(
        "--seq-len",
        type=bounded(int, "[1, 10000000]"),
        default=2048,
        help="sequence length for the FLOPs/token",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    """Entry point of `pretrain plan`."""
    args = _parse_args(argv)
    compute = (
        args.compute if args.compute is not None else gpu_hours_to_flops(args.gpu_hours, args.gpu, args.mfu)
    )
    plan = build_plan(compute, args.inference_tokens, args.family, args.vocab_size, args.seq_len)
    try:
        text = json.dumps(plan, allow_nan=False) if args.json else format_plan(plan)
    except ValueError:  # a NaN/inf figure: JSON has no such number, and the plan is meaningless
        print(
            f"error: the plan for compute {compute:.3e} has a non-finite figure; give a larger budget",
            file=sys.stderr,
        )
        return 1
    print(text)
    return 0
