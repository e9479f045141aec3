"""Config precedence (defaults < YAML < CLI) and strict errors."""

from __future__ import annotations

import pytest

from pretrain.config import ConfigError, parse_config, pop_options, save_config, valid_keys
from pretrain.settings import NoObjectiveConfig, make_run_config

RunConfig = make_run_config(NoObjectiveConfig)


def test_contract_keys_exist():
    keys = valid_keys(RunConfig)
    for key in ("train.output_dir", "train.max_steps", "data.train_file", "data.validation_file"):
        assert key in keys


def test_precedence_default_then_yaml_then_cli(tmp_path):
    default = tmp_path / "default.yaml"
    default.write_text("train:\n  max_steps: 100\n  learning_rate: 0.01\ndata:\n  seq_len: 128\n")
    user = tmp_path / "user.yaml"
    user.write_text("train:\n  max_steps: 200\n")
    cfg = parse_config(
        RunConfig, [str(user), "--train.learning_rate=5e-4", "--model.preset", "small"], default
    )
    assert cfg.train.max_steps == 200  # user YAML beats the recipe default
    assert cfg.train.learning_rate == 5e-4  # CLI beats both
    assert cfg.data.seq_len == 128  # recipe default beats the dataclass default
    assert cfg.model.preset == "small"
    assert cfg.train.warmup_steps == RunConfig().train.warmup_steps  # untouched keys keep defaults


def test_resolved_config_round_trips(tmp_path):
    cfg = parse_config(RunConfig, ["--train.report_to=tensorboard,wandb", "--data.seq_len=64"])
    save_config(cfg, tmp_path / "resolved.yaml")
    assert parse_config(RunConfig, [str(tmp_path / "resolved.yaml")]) == cfg
    assert cfg.train.report_to == ("tensorboard", "wandb")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--train.max_stepz=3"], "unknown config key(s) ['train.max_stepz']"),
        (["--train.max_steps=three"], "train.max_steps expects an integer"),
        (["--train.max_steps=2.5"], "train.max_steps expects an integer"),
        (["--data.document_mask=maybe"], "data.document_mask expects true/false"),
        (["--train.lr_scheduler_type=exp"], "is not one of ['cosine', 'linear', 'constant', 'wsd']"),
        (["--train.max_steps=0"], "train.max_steps=0 is out of range; give a value in [1, inf)"),
        (["--train.push_to_hub=true"], "needs train.hub_model_id"),
        (["--train.max_steps"], "has no value"),
        (["a.yaml", "b.yaml"], "at most one CONFIG.yaml"),
    ],
)
def test_strict_errors_name_the_problem(argv, message):
    with pytest.raises(ConfigError) as err:
        parse_config(RunConfig, argv)
    assert message in str(err.value)
    if "unknown" in message or "expects" in message:
        assert "valid keys:" in str(err.value) and "train.output_dir" in str(err.value)


def test_yaml_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_config(RunConfig, [str(bad)])
    with pytest.raises(ConfigError, match="does not exist"):
        parse_config(RunConfig, [str(tmp_path / "missing.yaml")])
    nested_unknown = tmp_path / "unknown.yaml"
    nested_unknown.write_text("optimizer:\n  lr: 1\n")
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['optimizer.lr'\]"):
        parse_config(RunConfig, [str(nested_unknown)])


def test_pop_options_takes_a_commands_own_options_and_keeps_the_rest_in_order():
    argv = ["--model", "m", "run.yaml", "--output=o", "--flag", "--train.seed=1", "--model=n", "--flag=x"]
    own, rest = pop_options(argv, ("--model", "--output"), flags=("--flag",))
    assert own == {"model": "n", "output": "o", "flag": "true"}  # the last value of a repeated option wins
    assert rest == ["run.yaml", "--train.seed=1"]
    assert pop_options(["--model"], ("--model",)) == ({"model": ""}, [])  # missing value: the caller's error
