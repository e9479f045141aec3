"""Real CPU launches (gloo, `accelerate launch`) of every parallel layout, each run once per test session.

tests/test_parallel.py and tests/test_sharded_checkpoint.py share these runs through the session
fixture `parallel_runs` (conftest.py): a launch costs mostly its processes' imports (~10 s each on an
idle core), so each layout trains once and every check on it reads its output folder.

Every run trains the same tiny Llama (2 layers, width 64, 512-token BPE, 32-token blocks) for 4
optimizer steps of 8 sequences (2 accumulated micro-steps), saving a sharded checkpoint every 2
steps; data order is a function of (seed, position), so every layout sees the same sequences.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO

ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
MAX_STEPS = 4
SHAPE = (
    "--model.family=llama",
    "--model.hidden_size=64",
    "--model.num_layers=2",
    "--model.num_heads=4",
    "--model.vocab_size=512",
    "--data.seq_len=32",
    "--data.max_train_documents=60",
    f"--train.max_steps={MAX_STEPS}",
    "--train.warmup_steps=1",
    "--train.learning_rate=3e-3",
    # Adam's first steps divide by sqrt(v) + eps: a larger eps keeps ~1e-8 gradient differences of
    # a changed reduction order from growing on near-zero elements, so weights compare to 1e-5 (they differ by <= 2.8e-6).
    "--train.adam_epsilon=1e-6",
    "--train.gradient_accumulation_steps=2",
    "--train.logging_steps=1",
    "--train.save_steps=2",
    "--train.save_total_limit=0",
    "--train.eval_frequency_buckets=",
)
ONE_REPLICA = ("--train.micro_batch_size=4",)  # TP and PP ranks read the same 4 sequences
TP = ("--parallel.tp_size=2", *ONE_REPLICA)

# name -> (launch config, processes, overrides, the run whose checkpoint-2 it resumes from)
RUNS: dict[str, tuple[str, int, tuple[str, ...], str | None]] = {
    "reference": ("single", 1, (*ONE_REPLICA, "--train.checkpoint_format=sharded"), None),
    "tp": ("tp", 2, (*TP, "--train.async_save=true"), None),
    "pp_gpipe": ("pp", 2, ("--parallel.pp_size=2", "--parallel.pp_schedule=gpipe", *ONE_REPLICA), None),
    "pp_1f1b": ("pp", 2, ("--parallel.pp_size=2", "--parallel.pp_schedule=1f1b", *ONE_REPLICA), None),
    "fsdp2": ("fsdp2", 2, ("--parallel.dp_shard_size=2", "--train.micro_batch_size=2"), None),
    # resharding resumes: TP=2 -> 1 process, and 1 process -> TP=2
    "reference_from_tp": ("single", 1, (*ONE_REPLICA, "--train.checkpoint_format=sharded"), "tp"),
    "tp_from_reference": ("tp", 2, TP, "reference"),
}


def launch(
    output_dir: Path, config: str, processes: int, *overrides: str, check: bool = True
) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file configs/accelerate/<config>.yaml` of the causal recipe."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "ACCELERATE_USE_CPU": "1",
        "PRETRAIN_EXPECTED_PROCESSES": str(processes),
    }
    cmd = [
        ACCELERATE,
        "launch",
        "--config_file",
        f"configs/accelerate/{config}.yaml",
        "--num_processes",
        str(processes),
        str(REPO / "recipes/causal/train.py"),
        *SHAPE,
        f"--train.output_dir={output_dir}",
        *overrides,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


class ParallelRuns:
    """Launches each run of RUNS on first use; `get(name)` is its finished output folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.logs: dict[str, str] = {}

    def get(self, name: str) -> Path:
        out = self.root / name
        if name not in self.logs:
            config, processes, overrides, resume_from = RUNS[name]
            if resume_from is not None:
                overrides = (
                    *overrides,
                    f"--train.resume_from_checkpoint={self.get(resume_from) / 'checkpoint-2'}",
                )
            proc = launch(out, config, processes, *overrides)
            self.logs[name] = proc.stdout + proc.stderr
        return out

    def log(self, name: str) -> str:
        self.get(name)
        return self.logs[name]


def losses(output_dir: Path) -> dict[int, float]:
    """Loss of every logged optimizer step."""
    lines = (output_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines)}
