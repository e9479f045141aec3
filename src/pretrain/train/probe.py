"""`pretrain probe --model DIR (--train-file F --validation-file F | --glue NAME) [--text-column C[,C2]]
[--label-column L] [--epochs N] [--output DIR] [--train.key=value ...]`: the pretrain -> fine-tune paradigm
as a number.

Fine-tunes a classification head on the saved encoder (stock `AutoModelForSequenceClassification`,
pretrain.objectives.classification) through the same Trainer as pretraining, then trains the same
architecture from a random initialisation with the same data, steps and hyperparameters, and reports
accuracy and macro-F1 (Spearman for a real-valued label, as STS-B) of both on the validation set,
computed by the `evaluate` metric modules shipped in pretrain/eval/metrics (never fetched from the Hub).
Local CSV/TSV/JSONL files always work; GLUE tasks by name when their data is reachable or cached.
Writes OUTPUT/probe_results.json (OUTPUT defaults to DIR/probe) and each run's metrics.jsonl below it.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import set_seed

from pretrain.config import ConfigError, build_config, load_yaml, parse_overrides, pop_options, to_dict
from pretrain.data.text import DataError
from pretrain.data.tokenizer import load_tokenizer
from pretrain.eval.detect import check_model_dir
from pretrain.eval.harness import evaluate
from pretrain.eval.metrics import load_metric
from pretrain.objectives.classification import SequenceClassification
from pretrain.settings import NoObjectiveConfig, make_run_config
from pretrain.train.trainer import Trainer

GLUE_DATASET = "nyu-mll/glue"
GLUE_COLUMNS = {  # task -> text column(s); the label column is "label"
    "sst2": "sentence",
    "cola": "sentence",
    "mrpc": "sentence1,sentence2",
    "rte": "sentence1,sentence2",
    "wnli": "sentence1,sentence2",
    "qnli": "question,sentence",
    "qqp": "question1,question2",
    "stsb": "sentence1,sentence2",
}
# Fine-tuning defaults (BERT, Devlin et al. 2019, sec. A.3: few epochs, linear decay, 10% warmup), with a
# higher rate for the small models trained here; every train.* key can be overridden.
DEFAULTS = {
    "train.learning_rate": 3e-4,
    "train.micro_batch_size": 16,
    "train.lr_scheduler_type": "linear",
    "train.min_lr_ratio": 0.0,
    "train.weight_decay": 0.01,
    "train.eval_frequency_buckets": [],
}
_VALUE_OPTIONS = ("--model", "--train-file", "--validation-file", "--glue", "--text-column", "--label-column")
_VALUE_OPTIONS += ("--epochs", "--output")


def split_probe_args(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """This command's own options, and the rest (--train.key=value overrides)."""
    own, rest = pop_options(argv, _VALUE_OPTIONS)
    if not own.get("model"):
        raise ConfigError(
            "pretrain probe needs --model DIR (a saved encoder with config.json and tokenizer files)"
        )
    if not own.get("glue") and not (own.get("train-file") and own.get("validation-file")):
        raise ConfigError(
            "pretrain probe needs --train-file F --validation-file F (CSV/TSV/JSONL) or --glue NAME"
        )
    return own, rest


def load_labelled(own: dict[str, str]) -> tuple[Any, Any, list[str], str]:
    """(train, validation) datasets with their text column(s) and label column."""
    import datasets

    if own.get("glue"):
        task = own["glue"]
        if task not in GLUE_COLUMNS:
            raise ConfigError(f"--glue {task} is not one of {', '.join(GLUE_COLUMNS)}; or give local files")
        try:
            splits = datasets.load_dataset(GLUE_DATASET, task)
        except (ConnectionError, OSError, ValueError) as err:
            raise DataError(
                f"GLUE task {task}: dataset {GLUE_DATASET}/{task} could not be loaded ({type(err).__name__}); it is "
                "not in the datasets cache and the Hub is unreachable or offline: run once with network, or "
                "export it to CSV/JSONL and pass --train-file/--validation-file"
            ) from err
        train, valid = splits["train"], splits["validation"]
        columns = own.get("text-column") or GLUE_COLUMNS[task]
    else:
        train, valid = (_load_file(own[key], key) for key in ("train-file", "validation-file"))
        columns = own.get("text-column") or "text"
    text_columns, label = [c for c in columns.split(",") if c], own.get("label-column") or "label"
    if not 1 <= len(text_columns) <= 2:
        raise ConfigError(f"--text-column takes one column or a pair A,B; got {columns!r}")
    for ds in (train, valid):
        missing = [c for c in [*text_columns, label] if c not in ds.column_names]
        if missing:
            raise DataError(
                f"column(s) {', '.join(missing)} not found (columns: {', '.join(ds.column_names)}); "
                "set --text-column and --label-column"
            )
    return train, valid, text_columns, label


def _load_file(path: str, option: str) -> Any:
    import datasets

    p = Path(path)
    kinds = {
        ".csv": ("csv", {}),
        ".tsv": ("csv", {"delimiter": "\t"}),
        ".jsonl": ("json", {}),
        ".json": ("json", {}),
    }
    if not p.is_file() or p.suffix not in kinds:
        raise DataError(f"--{option} {p} is not an existing .csv, .tsv, .jsonl or .json file")
    kind, kwargs = kinds[p.suffix]
    datasets.disable_progress_bars()  # a small local file: no split-generation bars on stderr
    return datasets.load_dataset(kind, data_files=str(p), split="train", **kwargs)


def encode_labels(train_labels: list, valid_labels: list) -> tuple[list, list, int]:
    """Labels as class ids (sorted distinct training labels) or floats (regression: num_labels 1)."""
    if all(isinstance(v, float) for v in train_labels) and any(v != int(v) for v in train_labels):
        return [float(v) for v in train_labels], [float(v) for v in valid_labels], 1
    classes = sorted(set(train_labels), key=str)
    ids = {c: i for i, c in enumerate(classes)}
    unseen = sorted({str(v) for v in valid_labels if v not in ids})
    if unseen or len(classes) < 2:
        raise DataError(
            f"validation labels {', '.join(unseen)} never occur in training" if unseen else "one label only"
        )
    return [ids[v] for v in train_labels], [ids[v] for v in valid_labels], len(classes)


def build_probe_config(own: dict[str, str], rest: list[str], train_size: int, output: Path, name: str) -> Any:
    """Fine-tuning config: DEFAULTS < --train.* overrides; max_steps from --epochs unless given."""
    positional, overrides = parse_overrides(rest)
    if positional or any(not k.startswith("train.") for k in overrides):
        raise ConfigError(
            f"pretrain probe takes only --train.key=value overrides, got {positional or list(overrides)}"
        )
    epochs = own.get("epochs", "3")
    if not epochs.isdigit() or int(epochs) < 1:
        raise ConfigError(f"--epochs must be a positive integer, got {epochs!r}")
    batch = int(overrides.get("train.micro_batch_size", DEFAULTS["train.micro_batch_size"]))
    steps = max(1, math.ceil(int(epochs) * train_size / max(batch, 1)))
    layer = {
        "train.max_steps": steps,
        "train.warmup_steps": steps // 10,
        "train.logging_steps": max(1, steps // 10),
    }
    layer["train.output_dir"] = str(output / name)
    return build_config(make_run_config(NoObjectiveConfig), DEFAULTS, layer, overrides)


def probe_max_length(model_dir: Path, config: Any) -> int:
    """Tokens per example: the run's data.seq_len (what the encoder saw), within the model's positions."""
    resolved = model_dir / "resolved_config.yaml"
    seq_len = int(load_yaml(resolved).get("data.seq_len", 128)) if resolved.is_file() else 128
    limit = getattr(config, "max_position_embeddings", 0) or getattr(config, "n_positions", 0) or seq_len
    if config.model_type in ("roberta", "xlm-roberta", "camembert"):
        limit -= config.pad_token_id + 1  # RoBERTa positions start after the padding index
    return min(seq_len, limit) if limit > 0 else seq_len


@torch.no_grad()
def predict(
    objective: SequenceClassification, model: torch.nn.Module, rows: list[dict], batch_size: int
) -> np.ndarray:
    """Predicted class ids (or values, for regression) of every row, in order."""
    model.eval()
    device, out = next(model.parameters()).device, []
    for start in range(0, len(rows), batch_size):
        batch = objective.collate(rows[start : start + batch_size], torch.Generator())
        scores = objective.predict(model, {k: v.to(device) for k, v in batch.items()})
        out.append((scores if objective.num_labels == 1 else scores.argmax(-1)).float().cpu().numpy())
    return np.concatenate(out)


def score(predictions: np.ndarray, references: list, regression: bool) -> dict[str, float]:
    """accuracy and macro-F1 (classes) or Spearman (regression), from the shipped evaluate modules."""
    if regression:
        return load_metric("spearmanr").compute(predictions=predictions.tolist(), references=references)
    preds = predictions.astype(int).tolist()
    return {
        **load_metric("accuracy").compute(predictions=preds, references=references),
        "macro_f1": load_metric("f1").compute(predictions=preds, references=references, average="macro")[
            "f1"
        ],
    }


def fine_tune(cfg: Any, data: dict[str, Any], accelerator: Accelerator, pretrained: bool) -> dict[str, float]:
    """Train one head (on the pretrained encoder or from scratch) and score it on the validation set."""
    set_seed(cfg.train.seed)  # both runs start from the same seed: same head init, same data order
    Path(cfg.train.output_dir).mkdir(parents=True, exist_ok=True)
    objective = SequenceClassification(
        cfg, data["tokenizer"], data["model_dir"], data["num_labels"], data["max_length"], pretrained
    )
    model = objective.build_model()
    train_rows = objective.encode(*data["train"])
    valid_rows = objective.encode(*data["valid"])
    trainer = Trainer(
        cfg, objective, model, train_rows, valid_rows, accelerator, yaml.safe_dump(to_dict(cfg)), 0.0
    )
    trainer.train()
    batch_size = cfg.train.eval_batch_size or cfg.train.micro_batch_size
    harness = evaluate(objective, trainer.model, valid_rows, trainer.plan.data_view, batch_size)
    predictions = predict(objective, accelerator.unwrap_model(trainer.model), valid_rows, batch_size)
    return {
        **score(predictions, data["valid"][2], data["num_labels"] == 1),
        "eval_loss": harness["eval_loss"],
    }


def run_probe(argv: list[str]) -> dict[str, Any]:
    from transformers import AutoConfig

    own, rest = split_probe_args(argv)
    model_dir = Path(own["model"])
    check_model_dir(model_dir)
    train, valid, text_columns, label = load_labelled(own)
    train_labels, valid_labels, num_labels = encode_labels(list(train[label]), list(valid[label]))

    def texts(ds: Any, labels: list) -> tuple:
        return ds[text_columns[0]], ds[text_columns[1]] if len(text_columns) > 1 else None, labels

    output = Path(own.get("output") or model_dir / "probe")
    data = {
        "model_dir": model_dir,
        "tokenizer": load_tokenizer(str(model_dir)),
        "num_labels": num_labels,
        "max_length": probe_max_length(model_dir, AutoConfig.from_pretrained(str(model_dir))),
        "train": texts(train, train_labels),
        "valid": texts(valid, valid_labels),
    }
    accelerator = Accelerator()
    results: dict[str, Any] = {}
    for name, pretrained in (("pretrained", True), ("scratch", False)):
        cfg = build_probe_config(own, rest, len(train), output, name)
        results[name] = fine_tune(cfg, data, accelerator, pretrained)
    results.update(
        model=str(model_dir),
        train_examples=len(train),
        validation_examples=len(valid),
        num_labels=num_labels,
        steps=cfg.train.max_steps,
    )
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        (output / "probe_results.json").write_text(json.dumps(results, indent=2))
    return results


def main(argv: list[str]) -> int:
    try:
        results = run_probe(argv)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    metrics = list(results["pretrained"])
    print(f"{'':<12} {'pretrained':>11} {'scratch':>11}")
    for metric in metrics:
        print(f"{metric:<12} {results['pretrained'][metric]:>11.4f} {results['scratch'][metric]:>11.4f}")
    print(
        f"({results['train_examples']} training, {results['validation_examples']} validation examples, "
        f"{results['steps']} steps each)"
    )
    return 0
