"""`pretrain probe`: a classification head on a pretrained masked encoder beats the same architecture
from scratch on a labelled set only the pretraining text can teach; the shipped `evaluate` metric
modules equal their definitions; bad input gives one error line."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import run_recipe

from pretrain.eval.metrics import load_metric
from pretrain.train.probe import main as probe_main

PRETRAIN_STEPS = 50


def write_frequency_set(folder: Path, tokenizer_dir: Path, n_train: int, n_valid: int) -> tuple[Path, Path]:
    """Twelve-word texts labelled by how often their words occur in the embedded corpus (the encoder's
    pretraining text): common words (frequency ranks 30-430) or rare ones (the 400 rarest seen). Training
    texts use every other word of each list, validation texts the others, so no validation word occurs in
    fine-tuning: only what pretraining taught about those words separates the classes. Every word is one
    token, so the classes do not differ in length; balanced, so chance is 0.5."""
    from transformers import AutoTokenizer

    from pretrain.data.text import embedded_documents

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    counts = Counter()
    for doc in embedded_documents():
        counts.update(tokenizer(doc, add_special_tokens=False)["input_ids"])
    words = [
        text
        for token, _ in counts.most_common()
        if (text := tokenizer.decode([token])).startswith(" ") and text[1:].isalpha() and len(text) > 2
    ]
    words = [w for w in words if len(tokenizer(w, add_special_tokens=False)["input_ids"]) == 1]
    common, rare = words[30:430], words[-400:]
    rng = random.Random(0)
    rows = {"train": [], "valid": []}
    for split, offset, n in (("train", 0, n_train), ("valid", 1, n_valid)):
        for i in range(n):
            pool = (common if i % 2 else rare)[offset::2]
            rows[split].append(
                {"text": "".join(rng.sample(pool, 12)).strip(), "label": "common" if i % 2 else "rare"}
            )
    folder.mkdir(parents=True, exist_ok=True)
    train, valid = folder / "train.jsonl", folder / "valid.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows["train"]))
    valid.write_text("".join(json.dumps(r) + "\n" for r in rows["valid"]))
    return train, valid


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """A tiny RoBERTa pretrained briefly with the masked objective on the embedded corpus."""
    out = tmp_path_factory.mktemp("probe") / "mlm"
    run_recipe("masked", out, f"--train.max_steps={PRETRAIN_STEPS}", "--train.eval_steps=0")
    return out


def test_probe_pretrained_beats_scratch_on_word_frequency(encoder, tmp_path, capsys):
    train, valid = write_frequency_set(tmp_path / "data", encoder, 320, 160)
    argv = ["--model", str(encoder), "--train-file", str(train), "--validation-file", str(valid)]
    argv += ["--epochs", "4", "--output", str(tmp_path / "probe"), "--train.learning_rate=1e-3"]
    assert probe_main(argv) == 0
    results = json.loads((tmp_path / "probe" / "probe_results.json").read_text())
    pretrained, scratch = results["pretrained"], results["scratch"]
    assert results["num_labels"] == 2 and results["validation_examples"] == 160
    assert pretrained["accuracy"] > scratch["accuracy"] + 0.1, results
    assert pretrained["macro_f1"] > scratch["macro_f1"] + 0.1, results
    assert (tmp_path / "probe" / "scratch" / "metrics.jsonl").is_file()  # both ran through the Trainer
    assert "pretrained" in capsys.readouterr().out


def test_shipped_metric_modules_equal_their_definitions():
    rng = np.random.default_rng(0)
    references, predictions = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    predictions[:80] = references[:80]
    accuracy = load_metric("accuracy").compute(predictions=predictions, references=references)["accuracy"]
    assert accuracy == pytest.approx(np.mean(predictions == references))
    per_class = []
    for k in range(3):
        tp = np.sum((predictions == k) & (references == k))
        per_class.append(2 * tp / (np.sum(predictions == k) + np.sum(references == k)))
    f1 = load_metric("f1").compute(predictions=predictions, references=references, average="macro")["f1"]
    assert f1 == pytest.approx(np.mean(per_class))
    x = rng.normal(size=50)
    rho = load_metric("spearmanr").compute(predictions=np.exp(x), references=x)["spearmanr"]
    assert rho == pytest.approx(1.0)  # a monotone transform keeps every rank


def test_probe_bad_input_is_one_error_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"sentence": "a", "label": 0}) + "\n")
    (tmp_path / "config.json").write_text("{}")
    argv = ["--model", str(tmp_path), "--train-file", str(bad), "--validation-file", str(bad)]
    assert probe_main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: column(s) text not found (columns: sentence, label)")
    assert probe_main(["--model", str(tmp_path), "--glue", "sst2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nyu-mll/glue/sst2 could not be loaded" in err[0], err
