"""Gathered negatives: one trainer step on 2 CPU processes equals 1 process on the same global batch.

The test launches this file as a script: once with plain python (1 process, the 8 triples in one
micro-batch) and once with `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2`
(gloo, DDP; 4 triples per process). Each run does one `Trainer.train_step` and saves the logged loss
and the gradient the optimizer sees. With candidates gathered across processes (and gradients
flowing back through the gather), both are the global-batch InfoNCE's.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER_ARGS = [
    "--model.family=roberta",
    "--model.hidden_size=32",
    "--model.num_layers=2",
    "--model.num_heads=2",
    "--model.dropout=0.0",  # deterministic forward passes: only the process layout differs
    "--data.seq_len=32",
    "--data.train_file=triples.jsonl",  # supervised mode's source; the batch below is built in place
    "--objective.mode=supervised",
    "--objective.pooling=mean",  # from random initialisation cls vectors are all alike (loss = log 16)
    "--train.micro_batch_size=4",
    "--train.learning_rate=1e-3",
    "--train.warmup_steps=0",
]
TEXTS = [
    "The for statement iterates over the items of any sequence.",
    "A class definition defines a class object.",
    "Exceptions are raised by the raise statement.",
    "The with statement wraps a block with a context manager.",
    "Lambda expressions create anonymous functions.",
    "Dictionaries map hashable keys to arbitrary values.",
    "Generators produce values lazily with yield.",
    "Modules are imported once and cached in sys.modules.",
]


def worker(out: Path) -> None:
    """One train step on this process's share of the 8 triples; rank 0 saves loss and gradient."""
    import datasets
    from accelerate.utils import set_seed

    from pretrain.config import parse_config
    from pretrain.data.tokenizer import set_post_processor, train_bpe_tokenizer
    from pretrain.objectives.contrastive import Contrastive
    from pretrain.runner import build_accelerator
    from pretrain.settings import make_run_config
    from pretrain.train.trainer import Trainer

    cfg = parse_config(make_run_config(Contrastive.Config), [*WORKER_ARGS, f"--train.output_dir={out}"])
    accelerator = build_accelerator(cfg)
    tokenizer = train_bpe_tokenizer(datasets.Dataset.from_dict({"text": TEXTS * 10}), 400)
    set_post_processor(tokenizer, "roberta")
    objective = Contrastive(cfg, tokenizer)
    ids = [
        torch.tensor(e.ids) for e in tokenizer.backend_tokenizer.encode_batch(TEXTS, add_special_tokens=False)
    ]
    triples = [{"query": ids[i], "doc": ids[(i + 1) % 8], "negative": ids[(i + 4) % 8]} for i in range(8)]
    set_seed(0)
    trainer = Trainer(cfg, objective, objective.build_model(), triples, triples, accelerator, "", 0.0)
    world, rank = accelerator.num_processes, accelerator.process_index
    share = len(triples) // world
    batch = objective.collate(triples[rank * share : (rank + 1) * share], torch.Generator())
    params = [p for _, p in sorted(accelerator.unwrap_model(trainer.model).named_parameters())]
    seen = {}
    trainer.optimizer.optimizer.register_step_pre_hook(
        lambda *_: seen.update(grad=torch.cat([p.grad.flatten() for p in params]))
    )
    result = trainer.train_step([trainer._to_device(batch)])
    record = {"world": world, "loss": result.loss, "grad_norm": result.grad_norm, "grad": seen["grad"]}
    if world == 1:  # the same 8 triples as two separate pools of 4: what no gathering would give
        model = accelerator.unwrap_model(trainer.model)
        halves = [objective.collate(triples[i : i + 4], torch.Generator()) for i in (0, 4)]
        record["separate_pools_loss"] = (
            sum(float(objective.compute_loss(model, h).loss_sum) for h in halves) / 8
        )
    if accelerator.is_main_process:
        torch.save(record, out / f"world{world}.pt")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(out: Path, processes: int) -> dict:
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    script = [str(Path(__file__).resolve()), str(out)]
    if processes == 1:
        cmd = [sys.executable, *script]
    else:
        accelerate = str(Path(sys.executable).with_name("accelerate"))
        cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", str(processes)]
        cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        cmd += ["--main_process_port", str(free_port()), *script]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return torch.load(out / f"world{processes}.pt")


def test_two_process_step_equals_one_process_on_the_global_batch(tmp_path):
    one, two = launch(tmp_path, 1), launch(tmp_path, 2)
    assert (one["world"], two["world"]) == (1, 2)  # really two processes, not accelerate's silent one
    print(
        f"\nloss: 1 process {one['loss']:.6f}, 2 processes {two['loss']:.6f}, "
        f"two separate pools of 4 {one['separate_pools_loss']:.6f}"
    )
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-5)
    assert abs(one["separate_pools_loss"] - one["loss"]) > 0.05  # the gather changes the loss
    scale = one["grad"].abs().max().item()  # summation order differs: compare at float32 precision
    torch.testing.assert_close(two["grad"], one["grad"], rtol=1e-4, atol=1e-5 * scale)
    relative = ((two["grad"] - one["grad"]).norm() / one["grad"].norm()).item()
    print(
        f"gradient: relative difference {relative:.2e}, norms {one['grad_norm']:.6f} vs {two['grad_norm']:.6f}"
    )
    assert relative < 1e-5
    assert two["grad_norm"] == pytest.approx(one["grad_norm"], rel=1e-4)


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
