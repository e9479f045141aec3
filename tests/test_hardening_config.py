"""Meaningless numbers are refused when the config or the command line is parsed, never trained on;
the text splits into the same documents whatever its line endings; garbage never becomes numbers."""

from __future__ import annotations

import dataclasses
import json
import math
import typing

import pytest
from conftest import TINY

from pretrain.config import ConfigError, _field_types, field_range, in_range, parse_config
from pretrain.data.text import _split_text_documents
from pretrain.objectives import OBJECTIVES, get_objective
from pretrain.objectives.causal import CausalLM
from pretrain.prepare.io import iter_txt_documents
from pretrain.prepare.pipeline import DataPipeConfig
from pretrain.runner import main as train_main
from pretrain.scaling.fitting import main as fit_main
from pretrain.scaling.planning import main as plan_main
from pretrain.scaling.sweep import SweepConfig
from pretrain.settings import make_run_config


def config_classes() -> list[type]:
    return [make_run_config(get_objective(name).Config) for name in OBJECTIVES] + [
        DataPipeConfig,
        SweepConfig,
    ]


def numeric_fields(cls: type, prefix: str = "") -> list[tuple[type, str, str, typing.Any]]:
    """(section class, field, dotted key, annotation) of every int/float (or tuple of them) field."""
    found = []
    for name, tp in _field_types(cls).items():
        if dataclasses.is_dataclass(tp):
            found += numeric_fields(tp, f"{prefix}{name}.")
        elif {int, float} & {tp, *typing.get_args(tp)}:
            found.append((cls, name, f"{prefix}{name}", tp))
    return found


def test_every_numeric_key_declares_a_range_that_holds_its_default():
    fields = {(cls, name): key for top in config_classes() for cls, name, key, _ in numeric_fields(top)}
    assert len(fields) > 80
    for (cls, name), key in fields.items():
        interval = field_range(cls, name)
        assert interval, f"{key} has no 'Range [lo, hi]' in its docstring"
        default = getattr(cls(), name)
        for value in default if isinstance(default, tuple) else (default,):
            assert in_range(value, interval), f"{key} default {value} outside {interval}"


BAD_VALUES = {
    "train.max_tokens=-1000": "[0, inf)",
    "data.seq_len=1": "[2, inf)",
    "data.seq_len=0": "[2, inf)",
    "train.min_lr_ratio=-0.5": "[0, 1]",
    "train.learning_rate=nan": "not a finite number",
    "train.max_grad_norm=inf": "not a finite number",
    "model.dropout=1.0": "[0, 1)",
    "model.num_layers=-2": "[0, inf)",
    "train.eval_batch_size=-1": "[0, inf)",
    "train.eval_frequency_buckets=[0,10]": "[1, inf)",
    "train.seed=-1": "[0, 4294967295]",
    "objective.mlm_probability=0": "(0, 1]",
}


@pytest.mark.parametrize("override", sorted(BAD_VALUES))
def test_out_of_range_value_is_one_line_before_any_training(override, tmp_path, capsys):
    objective = get_objective("masked") if override.startswith("objective.") else CausalLM
    code = train_main(objective, [*TINY, f"--train.output_dir={tmp_path / 'out'}", f"--{override}"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 1 and len(lines) == 1 and BAD_VALUES[override] in lines[0], err
    assert override.partition("=")[0] in lines[0]
    assert not (tmp_path / "out").exists()  # refused at parse time: nothing was created


def test_prepare_config_numbers_are_checked_too():
    with pytest.raises(
        ConfigError, match=r"quality.max_bullet_lines_fraction=1.5 is out of range; give a value in \[0, 1\]"
    ):
        parse_config(DataPipeConfig, ["--quality.max_bullet_lines_fraction=1.5"])


@pytest.mark.parametrize(
    "argv",
    [
        ["--compute", "nan"],
        ["--compute", "-5"],
        ["--compute", "inf", "--json"],
        ["--gpu-hours", "10", "--mfu", "1.5"],
        ["--compute", "1e20", "--seq-len", "0"],
        ["--compute", "1e20", "--inference-tokens", "-1"],
    ],
)
def test_plan_refuses_meaningless_numbers(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        plan_main(argv)
    assert exit_info.value.code == 2 and "give a value in" in capsys.readouterr().err


@pytest.mark.parametrize("compute", ["1", "1e3", "5.76e23", "1e40"])
def test_plan_json_is_always_valid_json(compute, capsys):
    assert plan_main(["--compute", compute, "--inference-tokens", "1e12", "--json"]) == 0

    def refuse(name):
        raise AssertionError(f"{name} in plan --json output")

    plan = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert plan["params"] > 0 and math.isfinite(plan["loss"])


def write_runs(root, losses):
    runs = []
    for i, loss in enumerate(losses):
        run = root / f"run{i}"
        run.mkdir()
        record = {"eval_loss": loss, "num_parameters": 1e5 * 2**i, "tokens_seen": 1e6 * 3 ** (i % 3)}
        (run / "eval_results.json").write_text(json.dumps(record))
        runs.append(str(run))
    return runs


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0, "3.1"])
def test_fit_refuses_a_run_with_a_meaningless_loss(bad, tmp_path, capsys):
    runs = write_runs(tmp_path, [4.0, 3.8, bad, 3.5, 3.4, 3.3])
    assert fit_main([*runs, "--output", str(tmp_path / "fit.png"), "--bootstrap", "0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "run2: eval_loss=" in err and "Traceback" not in err
    assert not (tmp_path / "fit.png").exists()


def test_fit_refuses_malformed_files_and_numbers(tmp_path, capsys):
    runs = write_runs(tmp_path, [4.0, 3.8, 3.6, 3.5, 3.4])
    (tmp_path / "run1" / "eval_results.json").write_text("{not json")
    assert fit_main([*runs, "--output", str(tmp_path / "fit.png")]) == 1
    assert "is not readable JSON" in capsys.readouterr().err
    (tmp_path / "run1" / "eval_results.json").write_text("[1, 2]")
    assert fit_main([*runs, "--output", str(tmp_path / "fit.png")]) == 1
    assert "not a JSON object" in capsys.readouterr().err
    assert fit_main([*runs, "--output", str(tmp_path / "missing" / "fit.png")]) == 1
    assert "its directory does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        fit_main([*runs, "--bootstrap", "-3"])
    assert "give a value in [0, 100000]" in capsys.readouterr().err


CLEAN = "First document line one.\nline two.\n\nSecond document.\n\n\nThird one here.\n"
VARIANTS = {
    "CRLF": CLEAN.replace("\n", "\r\n"),
    "CR": CLEAN.replace("\n", "\r"),
    "BOM": "\ufeff" + CLEAN,
    "BOM + CRLF": "\ufeff" + CLEAN.replace("\n", "\r\n"),
    "trailing whitespace": CLEAN.replace("\n", "  \t\n"),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_line_endings_bom_and_trailing_space_split_the_same_in_training(variant):
    expected = _split_text_documents(CLEAN)
    assert len(expected) == 3
    docs = _split_text_documents(VARIANTS[variant])
    assert [d.split() for d in docs] == [d.split() for d in expected]
    assert not any(d.startswith("\ufeff") for d in docs)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_line_endings_bom_and_trailing_space_split_the_same_in_prepare(variant, tmp_path):
    clean, other = tmp_path / "clean.txt", tmp_path / "other.txt"
    clean.write_text(CLEAN, newline="")
    other.write_bytes(VARIANTS[variant].encode())
    expected = [d["text"].split() for d in iter_txt_documents([str(clean)], "paragraph")]
    assert len(expected) == 3
    got = [d["text"] for d in iter_txt_documents([str(other)], "paragraph")]
    assert [d.split() for d in got] == expected and not got[0].startswith("\ufeff")
