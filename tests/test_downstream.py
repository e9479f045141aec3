"""Downstream tasks through lm-evaluation-harness: in-loop under 2-process DDP, `pretrain eval --tasks`,
the `lm_eval` command line and our multiple-choice scorer all give the same numbers on one tiny model;
an offline standard task fails with one line."""

from __future__ import annotations

import glob
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, TINY

from pretrain.eval.cli import main as eval_main

ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
LM_EVAL = str(Path(sys.executable).with_name("lm_eval"))
TASK = "doc_next_words"
LIMIT = 24
TASK_YAML = f"""task: {TASK}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {{data}}
test_split: test
output_type: multiple_choice
doc_to_text: context
doc_to_choice: choices
doc_to_target: label
target_delimiter: ""
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def write_task(folder: Path, n: int = 40) -> Path:
    """A 4-way next-words task from the embedded corpus (the model's training text): the true next three
    words after eight, against three-word spans from elsewhere. Hard for a briefly trained model."""
    from pretrain.data.text import embedded_documents

    words = " ".join(embedded_documents()[:200]).split()
    rng = random.Random(0)
    rows = []
    for _ in range(n):
        i = rng.randrange(len(words) - 11)
        choices = [" " + " ".join(words[i + 8 : i + 11])]
        while len(choices) < 4:
            j = rng.randrange(len(words) - 3)
            choices.append(" " + " ".join(words[j : j + 3]))
        order = rng.sample(range(4), 4)
        rows.append(
            {
                "context": " ".join(words[i : i + 8]),
                "choices": [choices[k] for k in order],
                "label": order.index(0),
            }
        )
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{TASK}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / f"{TASK}.yaml").write_text(TASK_YAML.format(data=data))
    return folder


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, cache_dir) -> tuple[Path, Path]:
    """(output dir, task folder) of a tiny causal model trained by 2 DDP processes with in-loop tasks."""
    tasks = write_task(tmp_path_factory.mktemp("tasks"))
    out = tmp_path_factory.mktemp("downstream") / "lm"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "ACCELERATE_USE_CPU": "1",
        "PRETRAIN_EXPECTED_PROCESSES": "2",
    }
    cmd = [
        ACCELERATE,
        "launch",
        "--config_file",
        "configs/accelerate/ddp.yaml",
        "--num_processes",
        "2",
        str(REPO / "recipes/causal/train.py"),
        *TINY,
        "--data.max_train_documents=120",
        "--train.micro_batch_size=4",
        "--train.max_steps=30",
        "--train.eval_steps=0",
        f"--train.output_dir={out}",
        f"--train.downstream_tasks=[{TASK},python_docs_mc]",
        "--train.downstream_eval_steps=15",
        f"--train.downstream_limit={LIMIT}",
        f"--train.downstream_include_path={tasks}",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, tasks


@pytest.fixture(scope="module")
def after_training(ddp_run) -> dict:
    """`pretrain eval --tasks` on the saved model, merged into its eval_results.json."""
    out, tasks = ddp_run
    argv = ["--model", str(out), "--tasks", f"{TASK},python_docs_mc", "--include-path", str(tasks)]
    assert eval_main([*argv, "--limit", str(LIMIT)]) == 0
    return json.loads((out / "eval_results.json").read_text())


def test_in_loop_ddp_equals_pretrain_eval_after_training(ddp_run, after_training):
    out, _ = ddp_run
    history = [json.loads(line) for line in (out / "downstream_history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [15, 30]
    in_loop = history[-1]["downstream"]
    assert after_training["world_size"] == 2 and "eval_loss" in after_training  # merged, nothing lost
    for task in (TASK, "python_docs_mc"):
        for metric in ("acc", "acc_norm"):
            for key in ("value", "stderr"):
                assert after_training["downstream"][task][metric][key] == pytest.approx(
                    in_loop[task][metric][key]
                )
    assert after_training["downstream"]["python_docs_mc"]["acc"]["value"] > 0.5  # chance is 0.25


def test_pretrain_eval_tasks_equals_lm_eval_command_line(ddp_run, after_training, tmp_path):
    out, tasks = ddp_run
    ours = after_training["downstream"][TASK]
    cmd = [
        LM_EVAL,
        "run",
        "--model",
        "hf",
        "--model_args",
        f"pretrained={out},dtype=float32",
        "--tasks",
        TASK,
    ]
    cmd += ["--include_path", str(tasks), "--limit", str(LIMIT), "--device", "cpu", "--batch_size", "8"]
    proc = subprocess.run([*cmd, "--output_path", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = json.loads(Path(glob.glob(f"{tmp_path}/**/results_*.json", recursive=True)[0]).read_text())
    theirs = theirs["results"][TASK]
    assert ours["acc"]["value"] == pytest.approx(theirs["acc,none"])
    assert ours["acc_norm"]["value"] == pytest.approx(theirs["acc_norm,none"])
    assert ours["acc"]["stderr"] == pytest.approx(theirs["acc_stderr,none"])
    assert 0.0 < ours["acc"]["value"] < 1.0  # a task that separates models, not a ceiling


def test_multiple_choice_scorer_agrees_with_prefix_lm_hflm(ddp_run):
    """Our JSONL scorer (--multiple-choice) and lm-eval with PrefixLMHFLM: the same log-likelihoods."""
    from pretrain.eval.compression import load_causal_lm
    from pretrain.eval.downstream import build_lm
    from pretrain.eval.multiple_choice import compute_accuracy, load_questions, score_choices

    out, tasks = ddp_run
    model, tokenizer = load_causal_lm(out)
    questions = load_questions(tasks / f"{TASK}.jsonl")[:10]
    ours = score_choices(model, tokenizer, questions, prefix_lm=True)
    lm = build_lm(model, tokenizer, prefix_lm=True, batch_size=7)
    requests = [_Request((q.context, choice)) for q in questions for choice in q.choices]
    theirs = np.array([total for total, _ in lm.loglikelihood(requests, disable_tqdm=True)])
    np.testing.assert_allclose(np.concatenate(ours), theirs, rtol=1e-5)
    split = np.split(theirs, np.cumsum([len(q.choices) for q in questions])[:-1])
    assert compute_accuracy(questions, ours) == compute_accuracy(questions, split)


class _Request:
    """The one attribute of lm-eval's Instance that `loglikelihood` reads."""

    def __init__(self, args: tuple[str, str]) -> None:
        self.args = args


def test_offline_standard_task_fails_with_one_line(ddp_run, capsys):
    """lm-eval's own hellaswag YAML (its folder as --include-path spares indexing all of lm-eval's tasks)."""
    import lm_eval

    out, _ = ddp_run
    hellaswag = Path(lm_eval.__file__).parent / "tasks" / "hellaswag"
    argv = ["--model", str(out), "--tasks", "hellaswag", "--include-path", str(hellaswag), "--limit", "2"]
    assert eval_main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: task hellaswag: dataset Rowan/hellaswag"), err
    assert "--include-path" in err[0] and "HF_DATASETS_OFFLINE" in err[0]
