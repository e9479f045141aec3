"""The whole pipeline: stage accounting, outputs the trainer can read, the `pretrain data prepare` CLI."""

from __future__ import annotations

import dataclasses
import json
import random

import datasets
import pytest

from pretrain.config import ConfigError, parse_config, save_config
from pretrain.prepare.cli import main, split_args
from pretrain.prepare.dedup import ExactDedupConfig
from pretrain.prepare.pipeline import DataPipeConfig, PipelineConfig, prepare, run_stages

SUBJECTS = (
    "The old farmer",
    "A young teacher",
    "My neighbour",
    "The captain of the ship",
    "Her brother",
    "The doctor",
    "A tired soldier",
    "The mayor",
    "Our guide",
    "The baker on the corner",
    "His grandmother",
    "The new priest",
)
VERBS = (
    "repaired",
    "painted",
    "visited",
    "described",
    "found",
    "sold",
    "carried",
    "watched",
    "cleaned",
    "built",
    "photographed",
    "remembered",
)
OBJECTS = (
    "the broken window",
    "a small wooden boat",
    "the village library",
    "an old stone bridge",
    "the empty barn",
    "a letter from the city",
    "the garden behind the church",
    "the red tractor",
    "a map of the valley",
    "the clock in the square",
    "the school roof",
    "a basket of apples",
)
TAILS = (
    "before the winter storms arrived",
    "with great care",
    "because nobody else would do it",
    "during the long summer evenings",
    "and then went home for dinner",
    "while the children were at school",
    "as the sun came up over the hills",
    "without telling anyone about it",
    "for the third time that year",
    "in the middle of the night",
    "to the surprise of the whole town",
    "after a short rest",
)
GERMAN = (
    "Die Brücke über den Fluss wurde im letzten Jahr erneuert, und die Bewohner der Stadt sind sehr "
    "zufrieden damit. Viele Menschen gehen am Abend dort spazieren, weil man von oben einen schönen "
    "Blick auf die Altstadt und die Berge hat. Der Bürgermeister hat angekündigt, dass auch der Markt "
    "im nächsten Frühjahr renoviert werden soll, damit mehr Besucher kommen."
)


def _document(rng: random.Random, sentences: int = 8) -> str:
    """Plain English prose that passes the quality rules and shares few 5-grams with other documents."""
    slots = [rng.sample(pool, sentences) for pool in (SUBJECTS, VERBS, OBJECTS, TAILS)]
    return " ".join(f"{s} {v} {o} {t}." for s, v, o, t in zip(*slots, strict=True))


def planted_corpus(seed: int = 0) -> tuple[list[str], dict[str, int]]:
    """Good English documents plus planted problems; returns (documents, what was planted)."""
    rng = random.Random(seed)
    good = [_document(rng) for _ in range(40)]
    near = [d.replace(" ", " also ", 1) for d in good[:5]]  # one inserted word: Jaccard ~0.95
    pii = [f"{_document(rng)} Write to jane.doe@example.com or call +44 20 7946 0958." for _ in range(3)]
    docs = good + good[10:15] + near + pii
    docs += ["Too short to keep.", "Far too short."] + [GERMAN, GERMAN.replace("Brücke", "Straße")]
    docs += ["", "   \x00  "]
    rng.shuffle(docs)
    planted = {"kept": 40 + 3, "exact": 5, "near": 5, "empty": 2, "german": 2, "short": 2, "pii_docs": 3}
    return docs, planted


def _check_accounting(reports: list) -> None:
    for before, after in zip(reports, reports[1:], strict=False):
        assert after.documents_in == before.documents_out
        assert after.bytes_in == before.bytes_out
    for r in reports:
        assert r.documents_in == r.documents_out + r.documents_removed
        assert sum(r.removed_by_reason.values()) == r.documents_removed
        if r.name not in ("normalize", "pii"):  # the two stages that rewrite text
            assert r.bytes_in == r.bytes_out + r.bytes_removed


def test_each_stage_removes_what_was_planted_and_counts_add_up():
    docs, planted = planted_corpus()
    out, reports = run_stages(datasets.Dataset.from_dict({"text": docs}), DataPipeConfig())
    by_name = {r.name: r for r in reports}
    assert [r.name for r in reports] == list(PipelineConfig().stages)
    _check_accounting(reports)
    assert by_name["normalize"].removed_by_reason == {"empty": planted["empty"]}
    assert by_name["exact_dedup"].removed_by_reason == {"exact_duplicate": planted["exact"]}
    assert by_name["langid"].removed_by_reason.get("language:de") == planted["german"]
    assert by_name["near_dedup"].removed_by_reason == {"near_duplicate": planted["near"]}
    assert by_name["pii"].counts["email"] == by_name["pii"].counts["phone"] == planted["pii_docs"]
    assert len(out) == reports[-1].documents_out == planted["kept"]
    assert sum("<EMAIL>" in t for t in out["text"]) == planted["pii_docs"]
    examples = by_name["exact_dedup"].examples
    assert examples and all(e["reason"] == "exact_duplicate" and e["text"] for e in examples)


def test_stages_can_be_reordered_and_switched_off():
    docs, planted = planted_corpus()
    cfg = DataPipeConfig(pipeline=PipelineConfig(stages=("pii", "exact_dedup")))
    out, reports = run_stages(datasets.Dataset.from_dict({"text": docs}), cfg)
    assert [r.name for r in reports] == ["pii", "exact_dedup"]
    assert len(out) == len(docs) - planted["exact"]
    with pytest.raises(ValueError, match="pipeline.stages"):
        PipelineConfig(stages=("normalize", "spellcheck"))


def test_repeated_lines_are_removed_across_documents():
    footer = "Subscribe to our newsletter for more stories like this one."
    docs = [f"First story about the harbour.\n{footer}", f"Second story about the mill.\n{footer}", footer]
    cfg = DataPipeConfig(
        pipeline=PipelineConfig(stages=("exact_dedup",)), exact_dedup=ExactDedupConfig(lines=True)
    )
    out, [report] = run_stages(datasets.Dataset.from_dict({"text": docs}), cfg)
    assert out["text"] == [docs[0], "Second story about the mill."]
    assert report.removed_by_reason == {"repeated_lines": 1} and report.counts == {"lines_removed": 1}


def test_parallel_run_gives_the_same_output():
    docs, _ = planted_corpus(seed=1)
    ds = datasets.Dataset.from_dict({"text": docs})
    serial, _ = run_stages(ds, DataPipeConfig())
    cfg = DataPipeConfig(pipeline=dataclasses.replace(PipelineConfig(), num_proc=2, batch_size=16))
    parallel, _ = run_stages(ds, cfg)
    assert parallel["text"] == serial["text"]


def _write_inputs(tmp_path):
    docs, planted = planted_corpus()
    jsonl = tmp_path / "part1.jsonl"
    jsonl.write_text("".join(json.dumps({"id": i, "content": d}) + "\n" for i, d in enumerate(docs[:30])))
    txt = tmp_path / "part2.txt"
    txt.write_text("\n \n".join(d for d in docs[30:] if d.strip()) + "\n")
    return [str(jsonl), str(txt)], docs


def test_cli_writes_a_dataset_the_trainer_can_load_and_a_report(tmp_path, capsys):
    inputs, docs = _write_inputs(tmp_path)
    out = tmp_path / "clean"
    argv = ["prepare", "--input", *inputs, "--output", str(out), "--input.text_column=content"]
    assert main([*argv, "--executor", "datasets"]) == 0
    ds = datasets.load_from_disk(str(out))
    assert ds.column_names == ["text"] and len(ds) > 0
    report = json.loads((out / "report.json").read_text())
    assert report["documents_out"] == len(ds)
    assert report["documents_in"] == sum(1 for d in docs if d.strip()) + sum(
        1 for d in docs[:30] if not d.strip()
    )
    assert (out / "report.md").read_text() in capsys.readouterr().out
    assert (out / "datapipe_config.yaml").is_file()
    assert not [
        p for p in tmp_path.iterdir() if p.name.startswith(".clean-work")
    ]  # temporary files cleaned up


def test_cli_refuses_bad_keys_and_existing_output(tmp_path, capsys):
    inputs, _ = _write_inputs(tmp_path)
    out = tmp_path / "clean"
    assert main(["prepare", "--input", inputs[1], "--output", str(out), "--quality.min_wordz=3"]) == 2
    assert "valid keys" in capsys.readouterr().err
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(["prepare", "--input", inputs[1], "--output", str(out)]) == 2
    assert "did not write" in capsys.readouterr().err
    stages = "--pipeline.stages=normalize"
    overwrite = ["prepare", "--input", inputs[1], "--output", str(out), stages, "--pipeline.overwrite=true"]
    assert main(overwrite) == 2  # a directory prepare did not write is never replaced
    assert (out / "keep.txt").read_text() == "x"
    (out / "keep.txt").unlink()
    assert main(overwrite[:-1]) == 0
    assert main(overwrite[:-1]) == 0  # the same command again resumes (finished: nothing to do)
    assert main(overwrite) == 0


def test_prepare_reads_parquet_and_saved_datasets(tmp_path):
    docs, _ = planted_corpus()
    saved = tmp_path / "saved"
    datasets.Dataset.from_dict({"text": docs}).save_to_disk(str(saved))
    parquet = tmp_path / "docs.parquet"
    datasets.Dataset.from_dict({"text": docs}).to_parquet(str(parquet))
    cfg = DataPipeConfig(pipeline=PipelineConfig(stages=("exact_dedup",)))
    report = prepare([str(saved), str(parquet)], tmp_path / "out", cfg)
    # The second copy of the corpus is entirely exact duplicates of the first.
    assert report["documents_in"] == 2 * len(docs)
    assert report["documents_out"] == len(set(docs))


def test_saved_config_reads_back_through_the_cli_arguments(tmp_path):
    cfg = DataPipeConfig(pipeline=PipelineConfig(stages=("pii", "normalize"), num_proc=2))
    save_config(cfg, tmp_path / "data.yaml")
    _, _, rest = split_args(["--input", "a", "--output", "o", "--config", str(tmp_path / "data.yaml")])
    assert parse_config(DataPipeConfig, rest) == cfg
    _, _, rest = split_args(
        ["--input", "a", "--output", "o", "--config", str(tmp_path / "data.yaml"), "--langid.languages=en,fr"]
    )
    assert parse_config(DataPipeConfig, rest).langid.languages == ("en", "fr")


def test_split_args():
    inputs, output, rest = split_args(["--input", "a", "b", "--config", "c.yaml", "--output=d", "--x.y=1"])
    assert (inputs, output, rest) == (["a", "b"], "d", ["c.yaml", "--x.y=1"])
    assert split_args(["--input=a", "--input.text_column=t", "--output", "o"]) == (
        ["a"], "o", ["--input.text_column=t"]
    )  # fmt: skip
    with pytest.raises(ConfigError, match="--output"):
        split_args(["--input", "a"])
