"""A real training process killed with SIGKILL mid-run resumes to the same result as no interruption."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from conftest import REPO, TINY

ARGS = [
    *TINY,
    "--data.max_train_documents=120",
    "--train.max_steps=16",
    "--train.save_steps=4",
    "--model.dropout=0.1",
]


def _launch(output_dir, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        str(REPO / "recipes" / "causal" / "train.py"),
        *ARGS,
        f"--train.output_dir={output_dir}",
        *extra,
    ]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_sigkill_then_resume_matches_uninterrupted(tmp_path, cache_dir):
    straight = _launch(tmp_path / "straight")
    out = tmp_path / "killed"
    victim = _launch(out)
    deadline = time.time() + 300
    while time.time() < deadline and not (out / "checkpoint-8").is_dir():
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert not (out / "eval_results.json").exists()  # it really died before finishing
    latest = (out / "latest").read_text()
    assert latest in ("checkpoint-8", "checkpoint-12")
    resumed = _launch(out, "--train.resume_from_checkpoint=latest")
    log = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, log
    assert f"resumed from {out / latest}" in log
    assert straight.wait(timeout=300) == 0
    expected = json.loads((tmp_path / "straight" / "eval_results.json").read_text())
    got = json.loads((out / "eval_results.json").read_text())
    assert abs(got["eval_loss"] - expected["eval_loss"]) < 1e-6
    assert got["tokens_seen"] == expected["tokens_seen"]
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 16  # no duplicated history after the resume
