"""A tool deletes or replaces only what it wrote: every writing command refuses an output that overlaps
its inputs or is a directory it did not write, and leaves the user's files untouched."""

from __future__ import annotations

import pytest
from conftest import TINY

from pretrain.config import ConfigError, parse_config
from pretrain.data.outputs import MARKER, claim_output_dir
from pretrain.eval.compress_cli import compress_main, decompress_main
from pretrain.objectives.causal import CausalLM
from pretrain.prepare.cli import main as data_main
from pretrain.prepare.tokenize import tokenize_to_shards
from pretrain.prepare.tokenize_cli import train_tokenizer
from pretrain.runner import prepare_output_dir
from pretrain.scaling.sweep import main as sweep_main
from pretrain.settings import make_run_config


def snapshot(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def raw(tmp_path):
    """A user's folder: raw text files and an unrelated file beside them."""
    folder = tmp_path / "raw"
    folder.mkdir()
    for i in range(3):
        (folder / f"part{i}.txt").write_text(f"Document {i} has several words in it for the filters.\n")
    (tmp_path / "notes.md").write_text("unrelated file of the user")
    return folder


def prepare(inputs, output, *extra):
    return data_main(["prepare", "--input", *map(str, inputs), "--output", str(output), *extra])


@pytest.mark.parametrize("where", ["input itself", "input's parent", "inside the input"])
def test_prepare_refuses_an_output_overlapping_its_input(raw, tmp_path, capsys, where):
    output = {"input itself": raw, "input's parent": tmp_path, "inside the input": raw / "clean"}[where]
    before = snapshot(tmp_path)
    assert prepare([raw], output, "--pipeline.overwrite=true", "--pipeline.stages=normalize") == 2
    err = capsys.readouterr().err
    assert "outside the inputs" in err and "Traceback" not in err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("executor, rerun_code", [("datasets", 2), ("local", 0)])  # local resumes a rerun
def test_prepare_overwrites_only_its_own_output(executor, rerun_code, raw, tmp_path, capsys):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "keep.txt").write_text("x")
    args = ("--pipeline.overwrite=true", "--pipeline.stages=normalize", f"--executor.name={executor}")
    assert prepare([raw], theirs, *args) == 2
    assert "did not write" in capsys.readouterr().err and (theirs / "keep.txt").read_text() == "x"
    ours = tmp_path / "clean"
    assert prepare([raw], ours, *args) == 0 and (ours / MARKER).is_file()
    assert prepare([raw], ours, *args[1:]) == rerun_code  # no overwrite asked
    assert prepare([raw], ours, *args) == 0 and (ours / "report.json").is_file()


def train_cfg(*argv):
    return parse_config(make_run_config(CausalLM.Config), [*TINY, *argv])


def test_train_refuses_a_directory_it_did_not_write(tmp_path):
    theirs = tmp_path / "home"
    theirs.mkdir()
    (theirs / "thesis.tex").write_text("years of work")
    for overwrite in ("false", "true"):
        cfg = train_cfg(f"--train.output_dir={theirs}", f"--train.overwrite_output_dir={overwrite}")
        with pytest.raises(ConfigError, match="did not write"):
            prepare_output_dir(cfg)
    assert sorted(p.name for p in theirs.iterdir()) == ["thesis.tex"]
    fresh = prepare_output_dir(train_cfg(f"--train.output_dir={tmp_path / 'run'}"))
    assert (fresh / MARKER).is_file()
    prepare_output_dir(train_cfg(f"--train.output_dir={fresh}"))  # its own directory: accepted again


def test_train_refuses_an_output_dir_holding_its_data(raw):
    cfg = train_cfg(f"--train.output_dir={raw.parent}", f"--data.train_file={raw / 'part0.txt'}")
    with pytest.raises(ConfigError, match="contains the input"):
        prepare_output_dir(cfg)


def test_train_refuses_an_empty_output_dir_at_parse_time():
    with pytest.raises(ConfigError, match="train.output_dir is empty"):
        train_cfg("--train.output_dir=")


def test_tokenize_refuses_an_output_overlapping_its_input(raw):
    before = snapshot(raw.parent)
    for output in (raw, raw.parent):
        with pytest.raises(ConfigError, match="outside the inputs"):
            tokenize_to_shards([str(raw)], output, str(raw.parent / "no-tokenizer"))
    with pytest.raises(ConfigError, match="outside the inputs"):
        train_tokenizer([str(raw)], str(raw.parent), 300)
    assert snapshot(raw.parent) == before
    theirs = raw.parent / "theirs"
    theirs.mkdir()
    (theirs / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="did not write"):
        train_tokenizer([str(raw)], str(theirs), 300)
    assert (theirs / "keep.txt").read_text() == "x"


def test_compress_force_replaces_only_its_own_files(tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    source = tmp_path / "in.txt"
    source.write_text("some text to compress")
    cases = [
        (compress_main, [source, source], "is the input"),
        (compress_main, [source, tmp_path / "notes.txt"], "not a file written by pretrain compress"),
        (compress_main, [source, model / "config.json"], "inside the input directory"),
        (compress_main, [source, tmp_path / "missing" / "x.plmz"], "does not exist"),
        (compress_main, [source, tmp_path / "adir"], "is a directory"),
        (decompress_main, [source, source], "is the input"),
    ]
    (tmp_path / "notes.txt").write_text("the user's notes")
    (tmp_path / "adir").mkdir()
    before = snapshot(tmp_path)
    for command, (first, second), message in cases:
        assert command(["--model", str(model), str(first), str(second), "--force"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, err
    assert snapshot(tmp_path) == before


def test_sweep_refuses_an_output_root_holding_its_config_and_foreign_run_dirs(tmp_path, capsys):
    config = tmp_path / "train.yaml"
    config.write_text("train:\n  max_steps: 1\n")
    common = [f"--sweep.train_config={config}", "--sweep.sizes=[32x2x2]", "--sweep.token_budgets=[1000]"]
    assert sweep_main([*common, f"--sweep.output_root={tmp_path}"]) == 1
    assert "contains the input" in capsys.readouterr().err
    root = tmp_path / "sweep"
    (root / "h32_l2_d1k").mkdir(parents=True)
    (root / "h32_l2_d1k" / "data.bin").write_bytes(b"someone else's")
    assert sweep_main([*common, f"--sweep.output_root={root}"]) == 1
    assert "did not write" in capsys.readouterr().err
    assert (root / "h32_l2_d1k" / "data.bin").read_bytes() == b"someone else's"


def test_claim_output_dir_refuses_a_file_and_marks_a_new_dir(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        claim_output_dir(tmp_path / "file", "train")
    assert claim_output_dir(tmp_path / "new", "train") is False
    assert claim_output_dir(tmp_path / "new", "train") is True
    with pytest.raises(ConfigError, match="did not write"):  # another tool's output is not ours either
        (tmp_path / "new" / "x").write_text("y")
        claim_output_dir(tmp_path / "new", "data prepare")
