"""Sharded checkpoints: resharding resumes (TP=2 <-> 1 process), SIGKILL during an asynchronous save,
and incremental checkpoints that restore bit for bit and report their size beside the full one's.

The resharding resumes are real launches (tests/parallel_runs.py): each resumes the other layout's
checkpoint-2 and must continue as if uninterrupted, i.e. equal the run that wrote it at steps 3-4.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import REPO, make_trainer, parameters
from parallel_runs import MAX_STEPS, losses
from safetensors.torch import load_file

LOSS_ATOL, WEIGHT_ATOL = 1e-6, 1e-5  # as in tests/test_parallel.py


@pytest.mark.slow  # real 1- and 2-process launches (tests/parallel_runs.py)
@pytest.mark.parametrize(
    ("resumed", "writer"), [("reference_from_tp", "tp"), ("tp_from_reference", "reference")]
)
def test_resume_on_another_layout_continues_exactly(parallel_runs, resumed, writer):
    out, original = parallel_runs.get(resumed), parallel_runs.get(writer)
    assert "resumed from" in parallel_runs.log(resumed) and "at step 2" in parallel_runs.log(resumed)
    got, expected = losses(out), losses(original)
    assert sorted(got) == list(range(3, MAX_STEPS + 1))  # steps 1-2 came from the checkpoint
    for step, loss in got.items():
        assert abs(loss - expected[step]) <= LOSS_ATOL, (step, loss, expected[step])
    a, b = load_file(original / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=WEIGHT_ATOL, msg=key)


# One blocking save, then asynchronous ones until one is caught mid-write (its DCP file exists, the
# write is not done): SIGKILL then. Each complete save records the parameters it holds.
KILL_SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys, time
    from pathlib import Path
    import torch
    sys.path.insert(0, sys.argv[2])
    from conftest import make_trainer, parameters

    out = Path(sys.argv[1])
    shape = ("--model.hidden_size=256", "--train.max_steps=20", "--train.async_save=true")
    trainer = make_trainer(out, *shape)
    trainer.train_step([next(trainer.batches)])
    trainer.state.step = 1
    trainer.save(blocking=True)
    torch.save(parameters(trainer), out.parent / "params-1.pt")
    for step in range(2, 20):
        trainer.train_step([next(trainer.batches)])
        trainer.state.step = step
        trainer.save()
        tmp, future = out / f".tmp-checkpoint-{step}", trainer.checkpointer.pending[0]
        while not any(tmp.glob("*.distcp")) and not future.done():
            time.sleep(0.0002)
        if not future.done():
            print(json.dumps({"killed_at": step}), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        trainer.checkpointer.wait()
        torch.save(parameters(trainer), out.parent / f"params-{step}.pt")
    """
)


@pytest.mark.slow  # a subprocess killed with SIGKILL
def test_sigkill_during_async_save_leaves_latest_on_previous_checkpoint(tmp_path, cache_dir):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, str(out), str(REPO / "tests")],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    killed = json.loads(proc.stdout.strip().splitlines()[-1])["killed_at"]
    assert (out / "latest").read_text() == f"checkpoint-{killed - 1}"
    assert not (out / f"checkpoint-{killed}").exists()
    partial = out / f".tmp-checkpoint-{killed}"
    assert partial.is_dir() and not (partial / "trainer_state.json").exists()  # never completed
    # the checkpoint `latest` names resumes to the parameters it was saved with, bit for bit
    trainer = make_trainer(out, "--model.hidden_size=256", "--train.resume_from_checkpoint=latest")
    trainer.maybe_resume()
    assert trainer.state.step == killed - 1
    saved = torch.load(tmp_path / f"params-{killed - 1}.pt")
    for name, tensor in parameters(trainer).items():
        assert torch.equal(tensor, saved[name]), name


def optimizer_tensors(trainer) -> dict[str, torch.Tensor]:
    state = trainer.optimizer.state_dict()["state"]
    return {f"{i}.{k}": v.clone() for i, s in state.items() for k, v in s.items() if torch.is_tensor(v)}


def test_incremental_checkpoint_restores_bit_exact_and_reports_its_size(tmp_path, cache_dir, capsys):
    run = (
        "--train.max_steps=3",
        "--train.save_steps=1",
        "--train.incremental_save=2",
        "--train.save_total_limit=0",
    )
    trainer = make_trainer(tmp_path, *run)
    trainer.train()
    expected_params, expected_optim = parameters(trainer), optimizer_tensors(trainer)
    expected_lr = trainer.scheduler.get_last_lr()
    printed = capsys.readouterr().out
    # checkpoint-1 is full; 2 and 3 hold only what changed since it
    assert (tmp_path / "checkpoint-1" / ".metadata").is_file()
    meta = json.loads((tmp_path / "checkpoint-3" / "incremental.json").read_text())
    assert meta["base"] == "checkpoint-1" and meta["index"] == 2
    assert 0 < meta["bytes"] < meta["base_bytes"]
    assert (
        f"checkpoint-3: incremental, {meta['bytes'] / 1e6:.3f} MB beside {meta['base_bytes'] / 1e6:.3f} MB"
        in printed
    )

    resumed = make_trainer(tmp_path, *run, "--train.resume_from_checkpoint=latest")
    resumed.maybe_resume()
    assert resumed.state.step == 3 and resumed.state.data_position == trainer.state.data_position
    for name, tensor in parameters(resumed).items():
        assert torch.equal(tensor, expected_params[name]), name
    got_optim = optimizer_tensors(resumed)
    assert got_optim.keys() == expected_optim.keys()
    for name, tensor in got_optim.items():
        assert torch.equal(tensor, expected_optim[name]), name
    assert resumed.scheduler.get_last_lr() == expected_lr
