"""`pretrain eval --model DIR [CONFIG.yaml] [--data.validation_file=PATH] [--section.key=value ...]`.

Evaluates any saved model of any objective with the same harness as training, and prints the
classical compressors' bits per byte on the same text beside the model's. The objective comes from
`--objective NAME`, else the run's eval_results.json, else the architecture in config.json; data
settings default to the run's own resolved_config.yaml, so `pretrain eval --model runs/x` re-measures
exactly what training measured.

Two more modes for causal and prefix-LM models: `--memorization [--prefix-tokens K]
[--continuation-tokens M] [--samples N]` (pretrain.eval.memorization) and `--multiple-choice FILE.jsonl`
(pretrain.eval.multiple_choice); they write memorization.json / multiple_choice.json in the model dir.
`--tasks NAME[,NAME...] [--include-path DIR] [--limit N] [--num-fewshot K]` runs lm-evaluation-harness
tasks (pretrain.eval.downstream_cli) and adds them to eval_results.json under `downstream`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pretrain.config import ConfigError, load_yaml, parse_overrides, pop_options
from pretrain.eval.detect import detect_objective
from pretrain.eval.downstream_cli import TASK_OPTIONS, format_downstream, run_tasks

_VALUE_OPTIONS = (
    "--model",
    "--objective",
    "--output",
    "--multiple-choice",
    "--prefix-tokens",
    "--continuation-tokens",
    "--samples",
    *TASK_OPTIONS,
)


def split_eval_args(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """Pull this command's own options (--model, --objective, --output, the modes) out of argv."""
    own, rest = pop_options(argv, _VALUE_OPTIONS, flags=("--memorization",))
    if not own.get("model"):
        raise ConfigError(
            "pretrain eval needs --model DIR (a directory with config.json and tokenizer files)"
        )
    return own, rest


def build_eval_config(objective_cls: type, model_dir: Path, rest: list[str]) -> Any:
    """Config for evaluation: the run's resolved config (if any) < CONFIG.yaml < overrides."""
    from pretrain.config import build_config
    from pretrain.settings import make_run_config

    positional, overrides = parse_overrides(rest)
    layers = []
    resolved = model_dir / "resolved_config.yaml"
    if resolved.is_file():
        # Keep the run's data/model/objective settings and the batch sizes its evaluation used (masks
        # and spans are drawn per evaluation batch); drop output/resume/push settings of the run.
        kept_train = ("train.micro_batch_size", "train.eval_batch_size", "train.seed")
        layers.append(
            {k: v for k, v in load_yaml(resolved).items() if not k.startswith("train.") or k in kept_train}
        )
    layers.extend(load_yaml(p) for p in positional)
    layers.append(overrides)
    return build_config(make_run_config(objective_cls.Config), *layers)


def run_probe(own: dict[str, str], model_dir: Path, objective: str, cfg: Any) -> tuple[dict[str, Any], str]:
    """The --memorization or --multiple-choice results of a causal/prefix-LM model, and their file name."""
    if objective not in ("causal", "prefix_lm"):
        raise ConfigError(
            f"--memorization/--multiple-choice need a causal or prefix-LM model; {model_dir} is {objective}"
        )
    if "multiple-choice" in own and "memorization" in own:
        raise ConfigError("give --memorization or --multiple-choice FILE, not both (run pretrain eval twice)")
    if "multiple-choice" in own:
        from pretrain.eval.multiple_choice import run_multiple_choice

        return run_multiple_choice(model_dir, own["multiple-choice"], objective), "multiple_choice.json"
    from pretrain.eval.memorization import CONTINUATION_TOKENS, NUM_SAMPLES, PREFIX_TOKENS, run_memorization

    def number(name: str, default: int) -> int:
        value = own.get(name, str(default))
        if not value.isdigit() or int(value) < 1:
            raise ConfigError(f"--{name} must be a positive integer, got {value!r}")
        return int(value)

    sizes = (number("prefix-tokens", PREFIX_TOKENS), number("continuation-tokens", CONTINUATION_TOKENS))
    return run_memorization(model_dir, cfg.data, *sizes, number("samples", NUM_SAMPLES)), "memorization.json"


def run_eval(argv: list[str]) -> dict[str, Any]:
    from accelerate import Accelerator

    from pretrain.data.text import load_raw_datasets
    from pretrain.data.tokenizer import load_tokenizer
    from pretrain.eval.harness import compression_baselines, evaluate
    from pretrain.objectives import get_objective

    own, rest = split_eval_args(argv)
    model_dir = Path(own["model"])
    if not model_dir.is_dir():
        raise ConfigError(f"--model {model_dir} is not a directory; give the output_dir of a finished run")
    objective_cls = get_objective(own.get("objective") or detect_objective(model_dir))
    if "tasks" in own:
        return run_tasks(own, model_dir, objective_cls.name)
    cfg = build_eval_config(objective_cls, model_dir, rest)
    if "memorization" in own or "multiple-choice" in own:
        results, name = run_probe(own, model_dir, objective_cls.name, cfg)
        Path(own.get("output") or model_dir / name).write_text(json.dumps(results, indent=2))
        return results
    accelerator = Accelerator()
    tokenizer = load_tokenizer(str(model_dir))
    objective = objective_cls(cfg, tokenizer)
    model = objective.load_model(model_dir).to(accelerator.device)
    _, valid_raw = load_raw_datasets(cfg.data)
    eval_data = objective.build_dataset(valid_raw, accelerator)
    batch_size = cfg.train.eval_batch_size or cfg.train.micro_batch_size
    results: dict[str, Any] = {
        "objective": objective.name,
        **evaluate(objective, model, eval_data, accelerator, batch_size),
    }
    if objective.language_model:
        results.update(compression_baselines("\n\n".join(valid_raw["text"]).encode("utf-8")))
    output = Path(own.get("output") or model_dir / "eval_results.pretrain-eval.json")
    output.write_text(json.dumps(results, indent=2))
    return results


def main(argv: list[str]) -> int:
    from pretrain.data.text import DataError

    if any(a in ("-h", "--help") for a in argv):
        from pretrain.config import build_config, render_help
        from pretrain.settings import NoObjectiveConfig, make_run_config

        keys = render_help(build_config(make_run_config(NoObjectiveConfig)))
        print(
            f"{__doc__}\nConfig keys (the run's resolved_config.yaml gives their values; objective keys too):\n{keys}"
        )
        return 0

    try:
        results = run_eval(argv)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    width = max(map(len, results))
    for key, value in results.items():
        if key == "downstream":  # --tasks: one line per task and metric
            print(*format_downstream(value), sep="\n")
            continue
        if isinstance(value, list):  # --memorization's examples, one per line
            print(key, *(f"  {item!r:.120}" for item in value), sep="\n")
            continue
        print(f"{key:<{width}}  {value:.4f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    return 0
