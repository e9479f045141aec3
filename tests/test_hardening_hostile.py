"""Bad inputs found by trying to break our own commands: each is one `error:` line, a non-zero exit
and nothing written (most fail when the arguments are parsed, so these tests cost no training)."""

from __future__ import annotations

import pytest
from conftest import TINY

from pretrain.objectives.causal import CausalLM
from pretrain.runner import main as train_main
from pretrain.scaling.fitting import main as fit_main


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    return lines[0]


YAML_CASES = {
    "a section given as a list": ("train:\n  - 1\n  - 2\n", "train is a section, not a value (got [1, 2])"),
    "a section given as a scalar": ("data: 5\n", "data is a section, not a value (got 5)"),
    "a key given twice": ("train:\n  max_steps: 2\n  max_steps: 3\n", "'max_steps' is given twice"),
}


@pytest.mark.parametrize("case", sorted(YAML_CASES))
def test_bad_yaml_shapes_are_one_line(case, tmp_path, capsys):
    text, message = YAML_CASES[case]
    (tmp_path / "run.yaml").write_text(text)
    out = tmp_path / "out"
    assert train_main(CausalLM, [str(tmp_path / "run.yaml"), *TINY, f"--train.output_dir={out}"]) == 1
    assert message in one_error_line(capsys)
    assert not out.exists()


def test_an_empty_section_is_accepted(tmp_path):
    from pretrain.config import parse_config
    from pretrain.settings import make_run_config

    (tmp_path / "run.yaml").write_text("train:\nmodel:\n  num_layers: 3\n")  # every train key commented out
    cfg = parse_config(make_run_config(CausalLM.Config), [str(tmp_path / "run.yaml")])
    assert cfg.model.num_layers == 3 and cfg.train == type(cfg.train)()


def test_an_integer_too_large_for_a_float_is_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    assert train_main(CausalLM, [*TINY, f"--train.output_dir={out}", "--train.max_steps=1e400"]) == 1
    assert "train.max_steps expects an integer, got '1e400'" in one_error_line(capsys)
    with pytest.raises(SystemExit) as exit_info:
        fit_main([str(tmp_path), "--bootstrap", "1e400"])
    assert exit_info.value.code == 2 and "'1e400' is not an integer" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "case, vocab, message",
    [
        ("missing input", "300", "input {tmp}/nope.txt does not exist"),
        ("empty input", "300", "hold no documents"),
        ("vocabulary below the byte alphabet", "10", "262 at least"),
    ],
)
def test_tokenizer_train_bad_inputs_are_one_line(case, vocab, message, tmp_path, capsys):
    from pretrain.prepare.tokenize_cli import tokenizer_main

    (tmp_path / "empty.txt").write_text("\n \n")
    source = tmp_path / ("nope.txt" if case == "missing input" else "empty.txt")
    out = tmp_path / "tok"
    argv = ["train", "--input", str(source), "--output", str(out), "--vocab-size", vocab]
    assert tokenizer_main(argv) == 2
    assert message.format(tmp=tmp_path) in one_error_line(capsys)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["empty.txt"]


def test_fit_refuses_a_run_given_twice_and_names_paths_that_are_not_runs(tmp_path, capsys):
    import json

    runs = []
    for i in range(5):
        (tmp_path / f"run{i}").mkdir()
        record = {"eval_loss": 4.0 - 0.1 * i, "num_parameters": 1e5 * 2**i, "tokens_seen": 1e6 * 3 ** (i % 3)}
        (tmp_path / f"run{i}" / "eval_results.json").write_text(json.dumps(record))
        runs.append(str(tmp_path / f"run{i}"))
    plot = tmp_path / "fit.png"
    assert fit_main([*runs[:4], runs[0] + "/", "--output", str(plot), "--bootstrap", "0"]) == 1
    assert "are given more than once" in one_error_line(capsys)
    (tmp_path / "empty").mkdir()
    assert fit_main([str(tmp_path / "missing"), str(tmp_path / "empty"), "--output", str(plot)]) == 1
    line = one_error_line(capsys)
    assert "got 0 (2 without eval_results.json:" in line and str(tmp_path / "missing") in line
    assert not plot.exists()


def test_eval_and_compress_of_a_checkpoint_folder_say_it_is_a_checkpoint(tmp_path, capsys):
    from pretrain.eval.cli import main as eval_main
    from pretrain.eval.compress_cli import compress_main

    checkpoint = tmp_path / "run" / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    for name in ("model.safetensors", "optimizer.bin", "trainer_state.json"):
        (checkpoint / name).write_text("{}")
    (tmp_path / "in.txt").write_text("some text")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert eval_main(["--model", str(checkpoint)]) == 1
    line = one_error_line(capsys)
    assert "is a training checkpoint" in line and f"give the run's output_dir {tmp_path / 'run'}" in line
    assert (
        compress_main(["--model", str(checkpoint), str(tmp_path / "in.txt"), str(tmp_path / "o.plmz")]) == 1
    )
    assert "is a training checkpoint" in one_error_line(capsys)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_symbolic_links_do_not_hide_an_overlap_or_a_missing_disk(tmp_path, capsys):
    from pretrain.config import ConfigError, parse_config
    from pretrain.prepare.cli import main as data_main
    from pretrain.runner import prepare_output_dir
    from pretrain.settings import make_run_config

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "part.txt").write_text("Some words of a document for the filters to keep.\n")
    (tmp_path / "raw-link").symlink_to(raw)
    argv = ["prepare", "--input", str(tmp_path / "raw-link"), "--output", str(raw / "clean")]
    assert data_main([*argv, "--pipeline.stages=normalize"]) == 2
    assert "lies inside the input directory" in one_error_line(capsys)
    assert sorted(p.name for p in raw.iterdir()) == ["part.txt"]

    (tmp_path / "scratch").symlink_to(tmp_path / "unmounted" / "run")
    cfg = parse_config(
        make_run_config(CausalLM.Config), [*TINY, f"--train.output_dir={tmp_path / 'scratch'}"]
    )
    with pytest.raises(ConfigError, match="is a symbolic link to .*unmounted/run, which does not exist"):
        prepare_output_dir(cfg)
    assert not (tmp_path / "unmounted").exists()


def test_resume_from_a_checkpoint_of_another_objective_names_it(tmp_path):
    from pretrain.config import ConfigError, parse_config, save_config
    from pretrain.objectives import get_objective
    from pretrain.settings import make_run_config
    from pretrain.train.resume_config import compare_resume_config

    def cfg(objective):
        return parse_config(make_run_config(get_objective(objective).Config), list(TINY))

    save_config(cfg("causal"), tmp_path / "resolved_config.yaml")
    for other in ("masked", "prefix_lm"):
        with pytest.raises(ConfigError, match=r"another objective saved it \(its objective keys none"):
            compare_resume_config(tmp_path, cfg(other))
    assert compare_resume_config(tmp_path, cfg("causal")) == []
    save_config(cfg("t5"), tmp_path / "resolved_config.yaml")
    with pytest.raises(ConfigError, match="'noise_density'"):
        compare_resume_config(tmp_path, cfg("causal"))


def test_a_leading_tilde_in_a_path_means_home_not_a_folder_named_tilde(tmp_path, monkeypatch):
    from pretrain.config import parse_config
    from pretrain.runner import prepare_output_dir
    from pretrain.settings import make_run_config

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    argv = [*TINY, "--train.output_dir=~/runs/x", "--data.train_file=~/data.txt"]
    cfg = parse_config(make_run_config(CausalLM.Config), argv)
    assert cfg.data.train_file == str(tmp_path / "home" / "data.txt")
    assert prepare_output_dir(cfg) == tmp_path / "home" / "runs" / "x"
    assert not (tmp_path / "~").exists()


@pytest.mark.parametrize("objective, family", [("causal", "bert"), ("masked", "gpt2"), ("contrastive", "t5")])
def test_a_family_the_objective_cannot_train_is_refused_before_any_work(objective, family, tmp_path, capsys):
    from pretrain.objectives import get_objective

    out = tmp_path / "out"
    argv = [*TINY, f"--train.output_dir={out}", f"--model.family={family}"]
    assert train_main(get_objective(objective), argv) == 1
    assert f"model.family='{family}' cannot train objective {objective}" in one_error_line(capsys)
    assert not out.exists()


def test_validating_on_the_training_file_is_refused_at_parse_time(tmp_path, capsys):
    data = tmp_path / "a.txt"
    data.write_text("some text\n\nmore text\n")
    (tmp_path / "link.txt").symlink_to(data)
    out = tmp_path / "out"
    argv = [*TINY, f"--train.output_dir={out}", f"--data.train_file={data}"]
    assert train_main(CausalLM, [*argv, f"--data.validation_file={tmp_path / 'link.txt'}"]) == 1
    assert "data.validation_file is data.train_file" in one_error_line(capsys)
    assert not out.exists()


def test_a_run_that_fails_before_writing_leaves_no_empty_output_dir(tmp_path, capsys):
    out, kept = tmp_path / "out", tmp_path / "kept"
    missing = f"--data.sources=[{{path: {tmp_path / 'nope.txt'}}}]"
    assert train_main(CausalLM, [*TINY, f"--train.output_dir={out}", missing]) == 1
    assert "nope.txt does not exist; fix the path or drop the source" in one_error_line(capsys)
    assert not out.exists()
    kept.mkdir()  # a directory that was there before the run is the user's: it stays
    assert train_main(CausalLM, [*TINY, f"--train.output_dir={kept}", missing]) == 1
    capsys.readouterr()
    assert kept.is_dir()


@pytest.mark.parametrize("option, value", [("--streams", "-5"), ("--streams", "100"), ("--threads", "0"), ("--stride", "-1")])  # fmt: skip
def test_compress_numbers_are_range_checked_when_parsed(option, value, tmp_path, capsys):
    from pretrain.eval.compress_cli import compress_main

    (tmp_path / "in.txt").write_text("some text")
    with pytest.raises(SystemExit) as exit_info:
        compress_main(
            ["--model", str(tmp_path), str(tmp_path / "in.txt"), str(tmp_path / "o.plmz"), option, value]
        )
    assert (
        exit_info.value.code == 2 and f"argument {option}: {value} is out of range" in capsys.readouterr().err
    )
    assert not (tmp_path / "o.plmz").exists()


def test_an_empty_input_reports_no_bits_per_byte():
    from pretrain.eval.compress_cli import format_report
    from pretrain.eval.compression import CompressionReport

    report = CompressionReport(0, 49, 49, 0, 0.0, 1_000_000, 1.0)
    text = format_report(report, {"gzip_bits_per_byte": 160.0})
    assert "none for an empty input" in text and "160" not in text and "original 0 bytes" in text
