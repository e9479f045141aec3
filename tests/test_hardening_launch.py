"""What a newcomer sees through the launcher: the README's `accelerate launch` flags and `make train`
print no accelerate "values were not passed" notice, no DeepSpeed CPU warning and no traceback; a bad
value or a second run into a finished output ends in one `error:` line; tokenization and tokenizer
training show progress (the tokenizer's bar is drawn by Rust, on a terminal only)."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

from conftest import REPO, TINY

BIN = Path(sys.executable).parent
LAUNCH_FLAGS = ("-q", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no")  # fmt: skip
RUN = (
    *TINY,
    "--train.max_steps=3",
    "--train.warmup_steps=1",
    "--train.eval_steps=0",
    "--data.max_train_documents=40",
)
NOISE = (
    "Traceback",
    "CalledProcessError",
    "values were not passed",
    "Setting accelerator to CPU",
    "[WARNING]",
)


def _env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DS_ACCELERATOR", "OMP_NUM_THREADS")}
    return {**env, "PRETRAIN_CACHE": str(cache), "HF_DATASETS_CACHE": str(cache / "hf")}


def _make_train(cache: Path, *args: str) -> subprocess.CompletedProcess:
    """`make train ARGS=...` with this interpreter's bin folder and the install stamp taken as made."""
    cmd = [
        "make",
        "-s",
        "-C",
        str(REPO),
        f"BIN={BIN}",
        "-o",
        ".venv/.installed",
        "train",
        "ARGS=" + " ".join(args),
    ]
    return subprocess.run(cmd, env=_env(cache), capture_output=True, text=True, timeout=300)


def _error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("error:")]


def test_the_readme_launch_is_quiet_and_a_second_make_train_is_one_line(tmp_path):
    out = tmp_path / "run"
    cmd = [str(BIN / "accelerate"), "launch", *LAUNCH_FLAGS, str(REPO / "recipes/causal/train.py"), *RUN,
           f"--train.output_dir={out}"]  # fmt: skip
    first = subprocess.run(cmd, env=_env(tmp_path / "cache"), capture_output=True, text=True, timeout=300)
    console = first.stdout + first.stderr
    assert first.returncode == 0, console[-3000:]
    assert [n for n in NOISE if n in console] == [], console[-3000:]
    assert "tokenize:" in first.stderr  # the datasets.map bar of tokenization
    assert "final evaluation" in console
    saved = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    second = _make_train(tmp_path / "cache", *RUN, f"--train.output_dir={out}")
    console = second.stdout + second.stderr
    assert second.returncode != 0
    assert [n for n in NOISE if n in console] == [], console[-3000:]
    errors = _error_lines(second)
    assert len(errors) == 1 and "already holds a finished model" in errors[0], console[-3000:]
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == saved


def test_a_bad_value_through_make_train_is_one_error_line(tmp_path):
    proc = _make_train(
        tmp_path / "cache", "--train.learning_rate=-1", f"--train.output_dir={tmp_path / 'run'}"
    )
    console = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert [n for n in NOISE if n in console] == [], console[-3000:]
    errors = _error_lines(proc)
    assert len(errors) == 1 and "train.learning_rate" in errors[0], console
    assert not (tmp_path / "run").exists()


def _on_a_terminal(code: str) -> tuple[int, str]:
    """Run `code` in a fresh interpreter whose stdout and stderr are a pseudo-terminal."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=slave, stderr=slave, env=os.environ.copy())
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return proc.wait(timeout=120), b"".join(chunks).decode("utf-8", "replace")


def test_tokenizer_training_shows_progress_on_the_main_process_only():
    code = """
import datasets
from pretrain.data.tokenizer import train_bpe_tokenizer
ds = datasets.Dataset.from_dict({{"text": [f"document {{i}} of words and more words" for i in range(3000)]}})
{disable}
train_bpe_tokenizer(ds, 600)
print("trained")
"""
    rc, shown = _on_a_terminal(code.format(disable=""))
    assert rc == 0 and "trained" in shown, shown[-2000:]
    assert "Compute merges" in shown and "Count pairs" in shown
    # other ranks disable the datasets bars; their tokenizer training is silent too
    rc, hidden = _on_a_terminal(code.format(disable="datasets.disable_progress_bars()"))
    assert rc == 0 and "trained" in hidden, hidden[-2000:]
    assert "Compute merges" not in hidden
