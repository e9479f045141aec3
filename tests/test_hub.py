"""Pushing runs to the Hugging Face Hub, end to end, against a stand-in Hub on 127.0.0.1.

No public Hub is reachable from the machines these tests run on, so tests/hub_server.py stands in
for it: a small HTTP server implementing the endpoints huggingface_hub 2.4 calls (whoami-v2, repos
create, branch, validate-yaml, preupload, NDJSON commit with base64 content, and the LFS batch
transfer), keeping every committed file so the tests can read them back. The real Hub would accept
the same requests; what it does beyond them (Xet storage, web pages, permissions) is not tested.

Training runs in a subprocess of recipes/causal/train.py with the server's URL in HF_ENDPOINT, the
way a user runs it: huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE when it is imported, and
this test process is offline (conftest.py).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO, TINY
from hub_server import HubServer
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM, AutoTokenizer

TOKEN = "hf_StandInToken9c1f0e7dA4b2"  # distinctive, so a leak is found by a plain substring search
EXPECTED_ROOT_FILES = {
    "README.md",
    "config.json",
    "model.safetensors",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "eval_results.json",
    "resolved_config.yaml",
    "metrics.jsonl",
    "eval_history.jsonl",
    "loss_by_frequency.png",
    "loss_curve.png",
}


def hub_env(hub_url: str, home: Path, token: str | None = TOKEN, **extra: str) -> dict[str, str]:
    """The environment of a user pushing to `hub_url`: online, the token in HF_TOKEN, a fresh HF_HOME."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.pop("HF_TOKEN_PATH", None)
    env.update(
        HF_ENDPOINT=hub_url,
        HF_HOME=str(home),  # no token saved by `hf auth login` from outside the test
        OMP_NUM_THREADS="1",
        PRETRAIN_HUB_ATTEMPTS="3",
        PRETRAIN_HUB_BACKOFF_S="0.05",
        **extra,
    )
    env.pop("HF_TOKEN", None)
    if token is not None:
        env["HF_TOKEN"] = token
    return env


def run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)


def train_cmd(out: Path, *overrides: str) -> list[str]:
    return [
        sys.executable,
        str(REPO / "recipes" / "causal" / "train.py"),
        *TINY,
        f"--train.output_dir={out}",
        "--train.push_to_hub=true",
        "--train.hub_model_id=tester/tiny-causal",
        *overrides,
    ]


def assert_token_absent(proc: subprocess.CompletedProcess, out: Path) -> None:
    """The token never reaches stdout/stderr nor any file of the run (metrics, config, card, ...)."""
    assert TOKEN not in proc.stdout and TOKEN not in proc.stderr
    for path in (p for p in out.rglob("*") if p.is_file()):
        assert TOKEN.encode() not in path.read_bytes(), path


def logits(model_dir: Path) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(ids).logits


@pytest.fixture(scope="module")
def pushed_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path):
    """A 20-step causal run pushed at the end and at each checkpoint (all_checkpoints)."""
    tmp = tmp_path_factory.mktemp("pushed")
    out = tmp / "run"
    with HubServer(TOKEN) as hub:
        proc = run(
            train_cmd(
                out, "--train.max_steps=20", "--train.save_steps=10", "--train.hub_strategy=all_checkpoints"
            ),
            hub_env(hub.url, tmp / "hf-home"),
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, hub, proc


def test_run_pushes_every_expected_file(pushed_run):
    out, hub, proc = pushed_run
    files = hub.files("tester/tiny-causal")
    root = {p for p in files if "/" not in p}
    assert root == EXPECTED_ROOT_FILES
    for name in root:
        assert files[name] == (out / name).read_bytes(), name
    # all_checkpoints: each checkpoint folder went up whole under checkpoint-<step>/.
    for step in (10, 20):
        local = {
            p.relative_to(out).as_posix() for p in (out / f"checkpoint-{step}").rglob("*") if p.is_file()
        }
        assert local and local <= set(files), sorted(local - set(files))
        assert f"checkpoint-{step}/trainer_state.json" in files
    assert "latest" not in files
    messages = [message for _, message, _ in hub.repos["tester/tiny-causal"].history]
    assert messages == ["Checkpoint at step 10", "Checkpoint at step 20", "End of training"]
    assert "pushed " in proc.stdout


def test_model_card_metadata_has_eval_results(pushed_run):
    out, hub, _ = pushed_run
    text = hub.files("tester/tiny-causal")["README.md"].decode()
    front_matter = yaml.safe_load(text.split("---\n")[1])
    assert front_matter["library_name"] == "transformers"
    assert front_matter["license"] == "apache-2.0"
    assert front_matter["pipeline_tag"] == "text-generation"
    assert {"pretrain", "causal", "gpt2"} <= set(front_matter["tags"])
    saved = yaml.safe_load((out / "eval_results.json").read_text())
    # huggingface_hub parses the model-index back into EvalResults, as the Hub would.
    card = ModelCard(text)
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert set(results) == {"eval_loss", "perplexity", "bits_per_byte", "accuracy"}
    for key, value in results.items():
        assert value == pytest.approx(saved[key], rel=1e-5), key
    assert all(r.dataset_split == "validation" for r in card.data.eval_results)
    # The body: objective, data, tokens seen, loss curve and the resolved config.
    assert "**causal** objective" in card.text and "embedded corpus" in card.text
    assert f"Tokens seen: {saved['tokens_seen']:,}" in card.text
    assert "![Training loss and learning rate](loss_curve.png)" in card.text
    config_block = card.text.split("## Resolved config\n\n```yaml\n")[1].split("```")[0]
    assert yaml.safe_load(config_block) == yaml.safe_load((out / "resolved_config.yaml").read_text())


def test_pushed_files_reload_into_an_equal_model(pushed_run, tmp_path):
    out, hub, _ = pushed_run
    pulled = tmp_path / "pulled"
    for name, data in hub.files("tester/tiny-causal").items():
        (pulled / name).parent.mkdir(parents=True, exist_ok=True)
        (pulled / name).write_bytes(data)
    torch.testing.assert_close(logits(pulled), logits(out), rtol=0, atol=0)
    assert AutoTokenizer.from_pretrained(pulled).get_vocab() == AutoTokenizer.from_pretrained(out).get_vocab()


def test_token_never_printed_or_written(pushed_run):
    out, _, proc = pushed_run
    assert_token_absent(proc, out)


def test_missing_token_fails_before_step_1(tmp_path, cache_dir):
    out = tmp_path / "run"
    with HubServer(TOKEN) as hub:
        proc = run(train_cmd(out), hub_env(hub.url, tmp_path / "hf-home", token=None))
    assert proc.returncode == 1
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert errors == [
        "error: cannot push to tester/tiny-causal: no Hugging Face token was found; set HF_TOKEN or run "
        "`hf auth login`, or drop --train.push_to_hub"
    ]
    assert "Traceback" not in proc.stderr and "train:" not in proc.stderr  # no progress bar: no step
    assert not out.exists() and hub.requests == []


def test_unreachable_endpoint_fails_before_step_1(tmp_path, cache_dir):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    out = tmp_path / "run"
    proc = run(train_cmd(out), hub_env(url, tmp_path / "hf-home"))
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot push to tester/tiny-causal: cannot reach the Hub at {url} ("), last
    assert "Connection refused" in last
    assert last.endswith("check HF_ENDPOINT and the network, or drop --train.push_to_hub")
    assert "Traceback" not in proc.stderr and not out.exists()
    assert TOKEN not in proc.stdout + proc.stderr


def test_server_error_retries_then_exits_nonzero_with_local_output_intact(tmp_path, cache_dir):
    """every_save pushes at steps 2 and 4 succeed; then the Hub answers 500 to every commit."""
    out = tmp_path / "run"
    overrides = ("--train.max_steps=4", "--train.save_steps=2", "--train.hub_strategy=every_save")
    with HubServer(TOKEN, fail=("commit",), fail_after=2) as hub:
        proc = run(train_cmd(out, *overrides), hub_env(hub.url, tmp_path / "hf-home"))
    assert proc.returncode == 1
    history = hub.repos["tester/tiny-causal"].history
    assert [m for _, m, _ in history] == ["Training in progress, step 2", "Training in progress, step 4"]
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(history[0][2])
    assert hub.count("/commit/") == 2 + 3  # the final push: 3 attempts (PRETRAIN_HUB_ATTEMPTS)
    retries = [ln for ln in proc.stderr.splitlines() if ln.startswith("hub: ")]
    assert len(retries) == 2 and retries[0].endswith("retry 1/2 in 0.05s") and retries[1].endswith("in 0.1s")
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: pushing ") and "failed after 3 attempts" in last and "500" in last
    assert last.endswith(f"pretrain push {out} --repo-id tester/tiny-causal")
    for name in ("config.json", "model.safetensors", "tokenizer.json", "eval_results.json", "README.md"):
        assert (out / name).is_file(), name
    assert not list(out.glob(".hub-staging-*"))
    assert logits(out).isfinite().all()
    assert_token_absent(proc, out)


def test_push_command_uploads_lfs_files_to_a_branch(pushed_run, tmp_path):
    """`pretrain push` of a finished run; safetensors travel by the LFS batch protocol this time."""
    out = tmp_path / "run"
    shutil.copytree(pushed_run[0], out)  # the push rewrites the card for its repo id: leave the original
    with HubServer(TOKEN, lfs_suffixes=(".safetensors",)) as hub:
        env = hub_env(hub.url, tmp_path / "hf-home", HF_HUB_DISABLE_XET="1")
        cmd = [str(Path(sys.executable).with_name("pretrain")), "push", str(out), "--repo-id", "tester/again"]
        proc = run([*cmd, "--revision", "v1", "--private"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert hub.repos["tester/again"].private
    files = hub.files("tester/again", "v1")
    assert files["model.safetensors"] == (out / "model.safetensors").read_bytes()
    assert hub.count("/lfs/objects/batch") == 1 and hub.count("/lfs-upload/") == 1
    assert {p for p in files if "/" not in p} == EXPECTED_ROOT_FILES
    assert not any(p.startswith("checkpoint-") for p in files)  # an output_dir push leaves checkpoints
    assert_token_absent(proc, out)
