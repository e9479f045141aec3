"""Hub pieces in this process: backoff, error classification, the offline preflight, which files go
up, the model card, and a checkpoint push that fails without stopping training.

This process is offline (conftest.py sets HF_HUB_OFFLINE=1), which is itself one of the cases: the
end-to-end pushes against the stand-in Hub server run in subprocesses in tests/test_hub.py.
"""

from __future__ import annotations

import json

import httpx2
import pytest
import yaml
from conftest import make_trainer, run_recipe
from huggingface_hub import ModelCard
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from pretrain.config import ConfigError
from pretrain.hub.model_card import MARKER, build_model_card, write_model_card
from pretrain.hub.push import HubError, Retry, describe, files_to_push, is_transient, with_retries


def http_error(status: int, message: str = "") -> HfHubHTTPError:
    request = httpx2.Request("POST", "http://127.0.0.1/api/models/u/n/commit/main")
    response = httpx2.Response(status, request=request, json={"error": message})
    return HfHubHTTPError(f"{status} error", response=response, server_message=message or None)


def test_backoff_doubles_from_the_base_and_is_capped():
    retry = Retry(attempts=8, base_wait_s=2.0, max_wait_s=60.0)
    assert [retry.wait_s(n) for n in range(1, 7)] == [2, 4, 8, 16, 32, 60]


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (httpx2.ConnectError("refused"), True),
        (httpx2.ReadTimeout("slow"), True),
        (http_error(500), True),
        (http_error(503), True),
        (http_error(429), True),
        (http_error(401), False),
        (http_error(404), False),
        (OfflineModeIsEnabled("offline"), False),
        (ValueError("malformed answer"), False),
    ],
)
def test_transient_errors_are_network_failures_and_5xx(error, transient):
    assert is_transient(error) is transient


def test_transient_cause_inside_a_wrapper_is_retried():
    try:
        try:
            raise httpx2.ConnectError("refused")
        except httpx2.ConnectError as inner:
            raise RuntimeError("Error while uploading 'model.safetensors' to the Hub.") from inner
    except RuntimeError as err:
        assert is_transient(err)


def test_retries_transient_failures_until_success(capsys):
    outcomes = [httpx2.ConnectError("refused"), http_error(502), "done"]

    def call() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert with_retries(call, "pushing", Retry(attempts=3, base_wait_s=0.0)) == "done"
    assert capsys.readouterr().err.count("retry") == 2


def test_gives_up_after_the_attempts_and_at_once_on_permanent_errors():
    calls = []

    def failing(error: Exception):
        def call():
            calls.append(error)
            raise error

        return call

    with pytest.raises(HubError, match=r"failed after 3 attempts \(HTTP 500: boom\)"):
        with_retries(failing(http_error(500, "boom")), "pushing", Retry(attempts=3, base_wait_s=0.0))
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(HubError, match=r"pushing failed: HTTP 403: no rights"):
        with_retries(failing(http_error(403, "no rights")), "pushing", Retry(attempts=3, base_wait_s=0.0))
    assert len(calls) == 1


def test_messages_mask_the_token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_SecretValue123")
    assert describe(ValueError("bad header Bearer hf_SecretValue123")) == "ValueError: bad header Bearer ***"
    assert "hf_SecretValue123" not in describe(http_error(500, "echo hf_SecretValue123"))


def test_offline_mode_fails_before_anything_is_written(tmp_path, cache_dir):
    out = tmp_path / "run"
    with pytest.raises(
        ConfigError, match="cannot push to u/n: HF_HUB_OFFLINE=1 keeps the Hub client offline"
    ):
        run_recipe("causal", out, "--train.push_to_hub=true", "--train.hub_model_id=u/n")
    assert not out.exists()


def test_files_to_push_leave_checkpoints_pointer_hidden_and_wandb(tmp_path):
    for name in (
        "config.json",
        "model.safetensors",
        "runs/events.out",
        "latest",
        "checkpoint-10/optimizer.bin",
        ".tmp-checkpoint-20/x",
        ".hub-staging-10/config.json",
        "wandb/offline-run/x",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    pushed = [p.relative_to(tmp_path).as_posix() for p in files_to_push(tmp_path)]
    assert pushed == ["config.json", "model.safetensors", "runs/events.out"]
    checkpoint = [p.relative_to(tmp_path).as_posix() for p in files_to_push(tmp_path / "checkpoint-10")]
    assert checkpoint == ["checkpoint-10/optimizer.bin"]


def test_card_of_a_checkpoint_folder_has_no_model_index(tmp_path):
    (tmp_path / "resolved_config.yaml").write_text(
        yaml.safe_dump({"model": {"family": "llama"}, "data": {"dataset_name": "wikitext", "seq_len": 128}})
    )
    (tmp_path / "trainer_state.json").write_text(json.dumps({"step": 30, "tokens_seen": 123456}))
    card = ModelCard(build_model_card(tmp_path, "me/ckpt"))
    assert card.data.datasets == ["wikitext"]
    assert card.data.eval_results is None and "llama" in card.data.tags
    assert "Tokens seen: 123,456" in card.text and "Optimizer steps: 30" in card.text
    assert "## Loss curve" not in card.text  # no loss_curve.png in this folder
    assert "resumable training checkpoint" in card.text and "from_pretrained(" not in card.text
    assert "objective" not in card.text.split("## Resolved config")[0]  # unknown here: not claimed


def test_sentence_transformers_folder_is_carded_as_such(tmp_path):
    (tmp_path / "modules.json").write_text("[]")
    (tmp_path / "eval_results.json").write_text(json.dumps({"objective": "contrastive", "eval_loss": 0.5}))
    card = ModelCard(build_model_card(tmp_path, "me/emb"))
    assert card.data.library_name == "sentence-transformers"
    assert card.data.pipeline_tag == "sentence-similarity" and "contrastive" in card.data.tags
    assert 'SentenceTransformer("me/emb")' in card.text


def test_downstream_scores_enter_the_model_index(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    downstream = {
        "arc_easy": {"acc": {"value": 0.4, "stderr": 0.01}, "acc_norm": {"value": 0.42, "stderr": None}}
    }
    results = {"objective": "causal", "eval_loss": 3.0, "downstream": downstream}
    (tmp_path / "eval_results.json").write_text(json.dumps(results))
    card = ModelCard(build_model_card(tmp_path, "me/lm"))
    index = {(r.dataset_type, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert index == {
        ("pretrain-embedded-corpus", "eval_loss"): 3.0,
        ("arc_easy", "acc"): 0.4,
        ("arc_easy", "acc_norm"): 0.42,
    }
    assert "| arc_easy | acc | 0.4000 | 0.0100 |" in card.text


def test_a_card_the_user_wrote_is_kept_and_ours_is_refreshed(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# My own card\n")
    assert write_model_card(tmp_path, "me/x") is None and readme.read_text() == "# My own card\n"
    readme.write_text(f"old\n{MARKER}\n")
    assert write_model_card(tmp_path, "me/x") == readme and "# x" in readme.read_text()


def test_failed_checkpoint_push_warns_and_training_continues(tmp_path, cache_dir, capsys):
    """Offline here, so each all_checkpoints push fails at once (no retry can fix offline mode)."""
    trainer = make_trainer(
        tmp_path,
        "--train.max_steps=2",
        "--train.save_steps=1",
        "--train.push_to_hub=true",
        "--train.hub_model_id=u/n",
        "--train.hub_strategy=all_checkpoints",
    )
    state = trainer.train()
    assert state.step == 2
    warnings = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning: ")]
    assert len(warnings) == 2 and all(
        "OfflineModeIsEnabled" in w and "training continues" in w for w in warnings
    )
    assert (tmp_path / "checkpoint-2" / "trainer_state.json").is_file()
