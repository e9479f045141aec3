"""Shared test fixtures: offline environment, a per-session cache, and an in-process recipe runner."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

REPO = Path(__file__).resolve().parents[1]

# Small but real: a 2-layer, 128-wide model on 64-token blocks trains in seconds on 2 CPU cores.
TINY = (
    "--model.preset=tiny",
    "--model.hidden_size=128",
    "--model.num_layers=2",
    "--model.num_heads=4",
    "--model.vocab_size=2048",
    "--data.seq_len=64",
    "--train.micro_batch_size=8",
    "--train.warmup_steps=5",
    "--train.learning_rate=3e-3",
    "--train.logging_steps=5",
)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache (embedded corpus, trained tokenizers) shared by the whole test session."""
    path = tmp_path_factory.mktemp("pretrain-cache")
    os.environ["PRETRAIN_CACHE"] = str(path)
    return path


def run_recipe(objective: str, output_dir: Path, *overrides: str, tiny: bool = True) -> dict[str, float]:
    """Train `objective` in this process with the tiny shape and `overrides`; returns final metrics."""
    from accelerate.state import AcceleratorState, GradientState

    from pretrain.config import parse_config
    from pretrain.objectives import get_objective
    from pretrain.runner import train
    from pretrain.settings import make_run_config

    objective_cls = get_objective(objective)
    default = REPO / "recipes" / objective / "config.yaml"
    argv = [*(TINY if tiny else ()), f"--train.output_dir={output_dir}", *overrides]
    cfg = parse_config(make_run_config(objective_cls.Config), argv, default if default.is_file() else None)
    # Accelerate keeps process-wide singletons; reset them so each in-process run starts clean.
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    return train(objective_cls, cfg)


def make_trainer(output_dir: Path, *overrides: str, objective_cls: type | None = None, accelerator_cls=None):
    """A Trainer on the embedded corpus with the tiny shape, built the way the runner builds one."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import set_seed

    from pretrain.config import parse_config, to_dict
    from pretrain.hub.push import push_checkpoint
    from pretrain.objectives.causal import CausalLM
    from pretrain.runner import build_components
    from pretrain.settings import make_run_config
    from pretrain.train.trainer import Trainer

    objective_cls = objective_cls or CausalLM
    argv = [*TINY, f"--train.output_dir={output_dir}", "--data.max_train_documents=120", *overrides]
    cfg = parse_config(make_run_config(objective_cls.Config), argv)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    accelerator = (accelerator_cls or Accelerator)()
    set_seed(cfg.train.seed)
    output_dir.mkdir(parents=True, exist_ok=True)
    objective, model, train_data, eval_data, _ = build_components(objective_cls, cfg, accelerator)
    config_yaml = str(to_dict(cfg))
    return Trainer(
        cfg,
        objective,
        model,
        train_data,
        eval_data,
        accelerator,
        config_yaml,
        1.0,
        after_save=push_checkpoint,
    )


def train_straight_and_resumed(tmp_path: Path, *overrides: str, stop_after: int) -> tuple[Any, Any]:
    """The run of `overrides` straight through (in tmp_path/straight), and again stopped after
    `stop_after` steps and resumed from its latest checkpoint (in tmp_path/resumed): both trainers, finished."""
    straight = make_trainer(tmp_path / "straight", *overrides)
    straight.train()
    first = make_trainer(tmp_path / "resumed", *overrides)
    first.max_steps = stop_after
    first.train()
    resumed = make_trainer(tmp_path / "resumed", *overrides, "--train.resume_from_checkpoint=latest")
    resumed.maybe_resume()
    assert resumed.state.step == stop_after
    resumed.train()
    return straight, resumed


def parameters(trainer) -> dict:
    """A detached copy of the trainer's model parameters."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


CONTRACT_FILES = (
    "resolved_config.yaml",
    "metrics.jsonl",
    "eval_results.json",
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "loss_curve.png",
)


def check_run_contract(output_dir: Path) -> list[dict]:
    """Assert a finished run wrote every file of the public contract; return its metrics records."""
    import json

    for name in CONTRACT_FILES:
        assert (output_dir / name).is_file(), name
    records = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    for key in ("step", "loss", "learning_rate", "grad_norm", "tokens_per_second"):
        assert all(key in r for r in records), key
    return records


@pytest.fixture(scope="session")
def parallel_runs(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path):
    """Every parallel layout's tiny run, launched once per session on first use (tests/parallel_runs.py)."""
    from parallel_runs import ParallelRuns

    return ParallelRuns(tmp_path_factory.mktemp("parallel"))
