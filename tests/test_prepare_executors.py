"""`pretrain data prepare` on datatrove's executors: local (1 and 4 tasks), Ray, Slurm (stub sbatch)
all keep the same documents with the same report counts as each other and as the `datasets` path;
a killed run finishes on rerun equal to an uninterrupted one; bad inputs fail in one line."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest
from test_datapipe_pipeline import GERMAN, _document

from pretrain.data.text import load_text_file
from pretrain.prepare.cli import main
from pretrain.prepare.io import InputConfig, load_inputs
from pretrain.prepare.pipeline import DataPipeConfig, run_stages

PII = "Write to jane.doe@example.com or call +44 20 7946 0958."


def corpus_shards(seed: int = 0) -> list[list[str]]:
    """Four input shards; exact and near duplicates sit in other shards than their originals."""
    rng = random.Random(seed)
    good = [_document(rng) for _ in range(24)]
    shards = [good[0:6], good[6:12], good[12:18], good[18:24]]
    shards[3] += good[6:9]  # exact copies of shard 1's documents
    shards[2] += [d.replace(" ", " also ", 1) for d in good[:3]]  # near copies of shard 0's
    shards[1] += [f"{_document(rng)} {PII}" for _ in range(2)]
    shards[0] += ["Too short to keep.", "", GERMAN]
    shards[3] += [GERMAN.replace("Brücke", "Straße"), "   \x00  "]
    return shards


def write_corpus(folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, docs in enumerate(corpus_shards()):
        path = folder / f"part{i}.jsonl"
        path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
        paths.append(str(path))
    return paths


def outcome(out: Path) -> tuple[list[str], list[tuple]]:
    """(sorted kept texts from the shards, per-stage counts from report.json)."""
    texts = []
    for shard in sorted(out.glob("*.jsonl.gz")):
        with gzip.open(shard, "rt") as f:
            texts += [json.loads(line)["text"] for line in f]
    report = json.loads((out / "report.json").read_text())
    counts = [
        (
            s["name"],
            s["documents_in"],
            s["documents_out"],
            s["bytes_in"],
            s["bytes_out"],
            s["removed_by_reason"],
            s["counts"],
        )
        for s in report["stages"]
    ]
    for s in report["stages"]:
        assert s["documents_in"] == s["documents_out"] + s["documents_removed"]
        assert sum(s["removed_by_reason"].values()) == s["documents_removed"]
        assert all(e["reason"] in s["removed_by_reason"] for e in s["examples"])
        assert len(s["examples"]) == sum(min(n, 2) for n in s["removed_by_reason"].values())
    assert report["documents_out"] == len(texts)
    return sorted(texts), counts


def prepare(inputs: list[str], out: Path, *args: str) -> int:
    return main(["prepare", "--input", *inputs, "--output", str(out), *args])


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[list[str], tuple]:
    """`--executor local --tasks 1`, checked against the `datasets` path on the same documents."""
    root = tmp_path_factory.mktemp("reference")
    inputs = write_corpus(root / "raw")
    assert prepare(inputs, root / "out", "--executor", "local", "--tasks", "1") == 0
    texts, counts = outcome(root / "out")
    docs = [d for shard in corpus_shards() for d in shard]
    expected, reports = run_stages(datasets.Dataset.from_dict({"text": docs}), DataPipeConfig())
    assert texts == sorted(expected["text"])
    assert counts == [
        (r.name, r.documents_in, r.documents_out, r.bytes_in, r.bytes_out, r.removed_by_reason, r.counts)
        for r in reports
    ]
    by_name = {c[0]: c for c in counts}
    assert by_name["exact_dedup"][5] == {"exact_duplicate": 3} and by_name["near_dedup"][5] == {
        "near_duplicate": 3
    }
    assert by_name["langid"][5]["language:de"] == 2 and by_name["pii"][6]["email"] == 2
    return texts, counts


def test_local_four_tasks_two_workers_equal_one_task(reference, tmp_path):
    inputs = write_corpus(tmp_path / "raw")
    assert prepare(inputs, tmp_path / "out", "--tasks", "4", "--workers", "2") == 0
    assert outcome(tmp_path / "out") == reference
    assert len(list((tmp_path / "out").glob("*.jsonl.gz"))) == 4
    # The trainer's reader (--data.train_file=DIR) and `pretrain data tokenize`'s reader take the dir.
    assert sorted(load_text_file(str(tmp_path / "out"))["text"]) == reference[0]
    assert (
        sorted(load_inputs([str(tmp_path / "out")], InputConfig(), str(tmp_path / "cache"))["text"])
        == reference[0]
    )


@pytest.mark.skipif(not importlib.util.find_spec("ray"), reason="Ray is the `ray` extra; `make test` has it")
def test_ray_two_tasks_equal_one_task(reference, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    inputs = write_corpus(tmp_path / "raw")
    args = ("--executor", "ray", "--tasks", "2", "--workers", "2", "--mem-per-cpu-gb", "0.25")
    assert prepare(inputs, tmp_path / "out", *args) == 0
    assert "local Ray on 127.0.0.1 " in capsys.readouterr().err  # the node's address as Ray reports it
    assert outcome(tmp_path / "out") == reference
    import ray

    assert not ray.is_initialized()  # the local Ray was shut down


STUB_SBATCH = """#!{python}
# Records each submitted script, then runs an array job's indices locally, at once, like Slurm
# would (jobs in submission order, which is dependency order); other jobs (datatrove's merge_stats) are only recorded.
import os, re, shutil, subprocess, sys
script, record = sys.argv[-1], os.environ["STUB_SLURM_RECORD"]
number = len(os.listdir(record))
shutil.copy(script, os.path.join(record, f"{{number:03d}}.sbatch"))
text = open(script).read()
env = dict(os.environ, SLURM_NODELIST="localhost", SLURM_JOB_ID=str(number))
for arg in sys.argv[1:-1]:
    if arg.startswith("--export=ALL,"):
        env.update(kv.split("=", 1) for kv in arg[len("--export=ALL,"):].split(","))
found = re.search(r"#SBATCH --array=0-(\\d+)", text)
indices = range(int(found.group(1)) + 1 if "launch_pickled_pipeline" in text else 0)
tasks = [subprocess.Popen(["bash", script], env=dict(env, SLURM_ARRAY_TASK_ID=str(i))) for i in indices]
assert all(task.wait() == 0 for task in tasks)
print(f"Submitted batch job {{number}}")
"""


def test_slurm_stub_two_tasks_equal_one_task(reference, tmp_path, monkeypatch):
    bin_dir, record = tmp_path / "bin", tmp_path / "submitted"
    bin_dir.mkdir()
    record.mkdir()
    (bin_dir / "sbatch").write_text(STUB_SBATCH.format(python=sys.executable))
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho localhost\n")
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("STUB_SLURM_RECORD", str(record))
    inputs = write_corpus(tmp_path / "raw")
    assert prepare(inputs, tmp_path / "out", "--executor", "slurm", "--tasks", "2", "--partition", "cpu") == 0
    assert outcome(tmp_path / "out") == reference
    scripts = [p.read_text() for p in sorted(record.iterdir())]
    arrays = [s for s in scripts if "launch_pickled_pipeline" in s]
    assert len(arrays) == 6 and all("#SBATCH --partition=cpu" in s for s in arrays)
    assert sum("#SBATCH --array=0-1" in s for s in arrays) == 4  # three 2-task segments and the buckets


def test_killed_run_resumes_to_the_uninterrupted_result(reference, tmp_path):
    inputs = write_corpus(tmp_path / "raw")
    last = Path(inputs[-1])
    content = last.read_text()
    last.unlink()
    os.mkfifo(last)  # task 3 blocks reading it: the run is killed with tasks 0-2 done
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pretrain.cli", "data", "prepare", "--input", *inputs, "--output", str(out)]
    proc = subprocess.Popen([*cmd, "--tasks", "4"], stderr=subprocess.DEVNULL, start_new_session=True)
    completions = out / "logs" / "00-segment-0" / "completions"
    deadline = time.monotonic() + 120
    while len(list(completions.glob("*"))) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert sorted(p.name for p in completions.iterdir()) == ["00000", "00001", "00002"]
    assert not (out / "report.json").exists()
    first_log = (completions.parent / "logs" / "task_00000.log").stat().st_mtime_ns
    last.unlink()
    last.write_text(content)
    assert prepare(inputs, out, "--tasks", "4") == 0
    assert outcome(out) == reference
    assert (completions.parent / "logs" / "task_00000.log").stat().st_mtime_ns == first_log  # not redone


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:"), err
    return err[0]


def test_bad_inputs_fail_in_one_line_and_delete_nothing(tmp_path, capsys, monkeypatch):
    inputs = write_corpus(tmp_path / "raw")
    out = tmp_path / "out"
    assert prepare(inputs, out, "--executor", "spark") == 2
    assert "unknown executor 'spark'" in _one_error_line(capsys) and not out.exists()
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")
    if importlib.util.find_spec("ray"):
        assert prepare(inputs, out, "--executor", "ray") == 2
        assert "cannot reach the Ray cluster" in _one_error_line(capsys) and not out.exists()
    no_ray = "import sys; sys.modules['ray'] = None; from pretrain.prepare.cli import main; sys.exit(main(sys.argv[1:]))"
    argv = ["prepare", "--input", *inputs, "--output", str(out), "--executor", "ray"]
    done = subprocess.run([sys.executable, "-c", no_ray, *argv], capture_output=True, text=True)
    assert done.returncode == 2 and not out.exists()
    assert done.stderr.strip().splitlines() == [
        "error: pretrain data prepare: --executor ray needs Ray, which is not installed: "
        "pip install 'pretrain[ray]' (or pip install ray==2.60.0)"
    ]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert prepare(inputs, out, "--executor", "slurm", "--partition", "cpu") == 2
    assert "sbatch is not on PATH" in _one_error_line(capsys) and not out.exists()
    monkeypatch.undo()
    assert prepare(inputs, out, "--pipeline.stages=normalize") == 0
    capsys.readouterr()
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert prepare(inputs, out, "--pipeline.stages=normalize,pii") == 2
    assert "belongs to a different run (config.pipeline.stages differs)" in _one_error_line(capsys)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_line_dedup_is_global_across_tasks(tmp_path):
    footer = "Subscribe to our newsletter for more stories like this one."
    shards = [
        [f"First story about the harbour.\n{footer}"],
        [f"Second story about the mill.\n{footer}", footer],
    ]
    inputs = []
    for i, docs in enumerate(shards):
        inputs.append(str(tmp_path / f"part{i}.jsonl"))
        Path(inputs[-1]).write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    args = ("--pipeline.stages=exact_dedup", "--exact_dedup.lines=true", "--tasks", "2")
    assert prepare(inputs, tmp_path / "out", *args) == 0
    texts, counts = outcome(tmp_path / "out")
    assert texts == sorted([shards[0][0], "Second story about the mill."])
    assert counts[0][5:] == ({"repeated_lines": 1}, {"lines_removed": 1})
