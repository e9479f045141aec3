"""Duplication versus memorization: one causal model trained on a deduplicated corpus, one on the same
corpus with planted subsets repeated k times, then held-out loss and extraction rate per count k.

Carlini et al. 2021 ("Extracting Training Data from Large Language Models") and Kandpal et al. 2022
("Deduplicating Training Data Mitigates Privacy Risks in Language Models") find that extraction grows
super-linearly with the number of copies of a sequence; Lee et al. 2022 ("Deduplicating Training Data
Makes Language Models Better") that deduplication costs little held-out loss.

`python recipes/analysis/duplication/run.py [CONFIG.yaml] [--duplication.key=value ...]`:

1. the training documents are deduplicated exactly (stripped text; documents also in the held-out set
   are dropped), and disjoint random groups of `documents_per_count` documents are drawn, one group
   per count k; the duplicated corpus holds every document once except group k, which it holds k
   times; both corpora are shuffled;
2. the causal recipe trains `dedup` on the first and `duplicated` on the second, at the same time, with
   the same config and token budget; both use one BPE trained here on the deduplicated corpus, so
   losses in nats per token compare;
3. the memorization probe (pretrain.eval.memorization) prompts each model with `prefix_tokens` tokens
   of one random window per planted document and counts the exact greedy continuations.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pretrain.config import ConfigError, parse_config
from pretrain.data.fast_encode import batch_encoder
from pretrain.data.text import DataError, load_raw_datasets
from pretrain.eval.compression import load_causal_lm
from pretrain.eval.memorization import probe_sequences, sample_sequences
from pretrain.settings import DataConfig

RUNS = ("dedup", "duplicated")


@dataclass(frozen=True)
class DuplicationSection:
    recipe: str = "recipes/causal/train.py"
    """Training entry point, run as `python RECIPE TRAIN_CONFIG --overrides...` from the repository root."""
    train_config: str = "recipes/analysis/duplication/train.yaml"
    """Recipe config both runs share (model, data shape, token budget, schedule)."""
    output_root: str = "runs/duplication"
    """The corpora, both runs (ROOT/dedup, ROOT/duplicated), results.json and the plot go here."""
    train_file: str = ""
    """Training documents (any data.train_file format); empty = the embedded default corpus."""
    validation_file: str = ""
    """Held-out documents; empty = the embedded corpus' validation split, or a hash split of train_file."""
    counts: tuple[int, ...] = (1, 4, 16, 64)
    """Copies of each planted group in the duplicated corpus (k), one group per count."""
    documents_per_count: int = 12
    """Documents planted per count k (the probe's sample size per k)."""
    min_document_chars: int = 600
    """Only documents at least this long are planted, so that each holds a probe window."""
    prefix_tokens: int = 32
    """Probe prompt length k (Carlini et al.'s prefix)."""
    continuation_tokens: int = 32
    """Greedily decoded tokens that must all match for a window to count as extracted."""
    seed: int = 0
    """Seed for the planted groups, the corpus order and the probe windows."""
    threads: int = 1
    """Torch threads per training run (OMP_NUM_THREADS) and for the probe; the two runs train at once.
    On a busy 2-core machine more threads than free cores stall every parallel region (see the
    scaling sweep's threads_per_run)."""

    def __post_init__(self) -> None:
        if (
            not self.counts
            or any(k < 1 for k in self.counts)
            or list(self.counts) != sorted(set(self.counts))
        ):
            raise ConfigError(
                f"duplication.counts must be positive, strictly increasing copy counts, got {list(self.counts)}"
            )
        for name in ("documents_per_count", "prefix_tokens", "continuation_tokens", "threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"duplication.{name} must be >= 1, got {getattr(self, name)}")
        if self.min_document_chars < 0:
            raise ConfigError(f"duplication.min_document_chars must be >= 0, got {self.min_document_chars}")


@dataclass(frozen=True)
class DuplicationConfig:
    duplication: DuplicationSection = field(default_factory=DuplicationSection)


@dataclass(frozen=True)
class PlantedCorpus:
    """The two training corpora, the planted groups and the held-out documents."""

    deduplicated: list[str]
    """Every training document once, shuffled."""
    duplicated: list[str]
    """The same documents, group k repeated k times, shuffled."""
    groups: dict[int, list[str]]
    """k -> the documents that the duplicated corpus holds k times."""
    heldout: list[str]


def exact_dedup(texts: list[str]) -> list[str]:
    """Stripped, non-empty texts, each once, in first-seen order."""
    return list(dict.fromkeys(t.strip() for t in texts if t and t.strip()))


def plant_duplicates(
    train_texts: list[str],
    heldout_texts: list[str],
    counts: tuple[int, ...],
    documents_per_count: int,
    seed: int,
    min_chars: int = 0,
) -> PlantedCorpus:
    """Deduplicate the training documents and repeat one random group of documents k times per count."""
    heldout = exact_dedup(heldout_texts)
    held = set(heldout)
    docs = [t for t in exact_dedup(train_texts) if t not in held]
    rng = np.random.default_rng(seed)
    candidates = [int(i) for i in rng.permutation(len(docs)) if len(docs[i]) >= min_chars]
    need = len(counts) * documents_per_count
    if len(candidates) < need:
        raise ConfigError(
            f"{len(counts)} counts x {documents_per_count} documents need {need} distinct training documents of "
            f">= {min_chars} characters, the corpus has {len(candidates)}; lower duplication.documents_per_count "
            "or duplication.min_document_chars, or give a larger duplication.train_file"
        )
    groups = {
        k: [docs[i] for i in candidates[j * documents_per_count : (j + 1) * documents_per_count]]
        for j, k in enumerate(counts)
    }
    copies = {doc: k for k, group in groups.items() for doc in group}
    duplicated = [doc for doc in docs for _ in range(copies.get(doc, 1))]
    return PlantedCorpus(
        deduplicated=[docs[i] for i in rng.permutation(len(docs))],
        duplicated=[duplicated[i] for i in rng.permutation(len(duplicated))],
        groups=groups,
        heldout=heldout,
    )


def write_jsonl(texts: list[str], path: Path) -> None:
    """One {"text": ...} line per document, written atomically."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.writelines(json.dumps({"text": t}) + "\n" for t in texts)
    os.replace(tmp, path)


def train_command(cfg: DuplicationSection, run: str) -> list[str]:
    """The subprocess command that trains one of the two runs (with the shared tokenizer)."""
    root = Path(cfg.output_root)
    return [
        sys.executable,
        cfg.recipe,
        cfg.train_config,
        f"--data.train_file={root / f'{run}.jsonl'}",
        f"--data.validation_file={root / 'heldout.jsonl'}",
        f"--model.tokenizer_name={root / 'tokenizer'}",
        f"--train.output_dir={root / run}",
        "--train.overwrite_output_dir=true",
    ]


def build_shared_tokenizer(cfg: DuplicationSection, texts: list[str]) -> Path:
    """The BPE both runs use, trained on the deduplicated corpus with the runs' vocabulary size."""
    import datasets

    from pretrain.data.tokenizer import set_post_processor, train_bpe_tokenizer
    from pretrain.objectives.causal import CausalLM
    from pretrain.settings import make_run_config

    recipe_default = Path(cfg.recipe).with_name("config.yaml")
    run_cfg = parse_config(
        make_run_config(CausalLM.Config),
        [cfg.train_config],
        recipe_default if recipe_default.is_file() else None,
    )
    tokenizer = train_bpe_tokenizer(datasets.Dataset.from_dict({"text": texts}), run_cfg.model.vocab_size)
    set_post_processor(tokenizer, CausalLM.post_processor)
    path = Path(cfg.output_root) / "tokenizer"
    tokenizer.save_pretrained(str(path))
    return path


def train_runs(cfg: DuplicationSection) -> dict[str, dict[str, Any]]:
    """Train both runs at once, `threads` torch threads each (logs in ROOT/RUN.log); their eval_results."""
    root = Path(cfg.output_root)
    env = {**os.environ, "OMP_NUM_THREADS": str(cfg.threads), "TOKENIZERS_PARALLELISM": "false"}
    start = time.monotonic()
    procs = {}
    for run in RUNS:
        with open(root / f"{run}.log", "w") as log:
            procs[run] = subprocess.Popen(
                train_command(cfg, run), stdout=log, stderr=subprocess.STDOUT, env=env
            )
    codes = {run: proc.wait() for run, proc in procs.items()}
    failed = [f"{run} (exit {code}, see {root / f'{run}.log'})" for run, code in codes.items() if code]
    if failed:
        raise ConfigError(f"training failed: {', '.join(failed)}")
    print(f"both runs trained in {time.monotonic() - start:.0f} s", flush=True)
    return {run: json.loads((root / run / "eval_results.json").read_text()) for run in RUNS}


def probe_run(model_dir: Path, corpus: PlantedCorpus, cfg: DuplicationSection) -> dict[str, Any]:
    """Extracted windows per planted group (and for held-out documents) of one trained model."""
    import torch

    torch.set_num_threads(cfg.threads)
    model, tokenizer = load_causal_lm(model_dir)
    length = cfg.prefix_tokens + cfg.continuation_tokens
    groups = {**{str(k): docs for k, docs in corpus.groups.items()}, "heldout": corpus.heldout}
    rows = {}
    for name, docs in groups.items():
        windows = sample_sequences(docs, tokenizer, len(docs), length, cfg.seed)
        matched = probe_sequences(model, windows, cfg.prefix_tokens)
        rows[name] = {
            "windows": len(windows),
            "extracted": int((matched == cfg.continuation_tokens).sum()),
            "mean_matched_tokens": float(matched.mean()) if len(matched) else float("nan"),
        }
    return rows


def count_tokens(texts: list[str], tokenizer_dir: Path) -> int:
    """Tokens of `texts` under the shared tokenizer (documents only, no separators)."""
    from pretrain.data.tokenizer import load_tokenizer

    encode = batch_encoder(load_tokenizer(str(tokenizer_dir)))
    return sum(len(ids) for start in range(0, len(texts), 512) for ids in encode(texts[start : start + 512]))


def summarize(
    cfg: DuplicationSection, corpus: PlantedCorpus, evals: dict, probes: dict, tokens: dict
) -> dict[str, Any]:
    """results.json: held-out loss, epochs and extraction per count of both runs."""
    epochs = {run: evals[run]["tokens_seen"] / tokens[run] for run in RUNS}
    per_count = []
    for k in cfg.counts:
        row: dict[str, Any] = {"copies": k, "documents": len(corpus.groups[k])}
        for run in RUNS:
            probe = probes[run][str(k)]
            copies = k if run == "duplicated" else 1
            row[run] = {**probe, "exposures": copies * epochs[run]}
        per_count.append(row)
    return {
        "config": asdict(cfg),
        "corpus_documents": {"dedup": len(corpus.deduplicated), "duplicated": len(corpus.duplicated)},
        "corpus_tokens": tokens,
        "epochs": epochs,
        "heldout_documents": len(corpus.heldout),
        "heldout": {
            run: {
                "eval_loss": evals[run]["eval_loss"],
                "bits_per_byte": evals[run]["bits_per_byte"],
                **probes[run]["heldout"],
            }
            for run in RUNS
        },
        "per_count": per_count,
        "tokens_seen": {run: evals[run]["tokens_seen"] for run in RUNS},
    }


def format_results(results: dict[str, Any]) -> str:
    """The held-out line per run and the extraction table per count k."""
    lines = []
    for run in RUNS:
        h = results["heldout"][run]
        lines.append(
            f"{run:<11} held-out loss {h['eval_loss']:.4f} nats/token, {h['bits_per_byte']:.4f} bits/byte; "
            f"{results['epochs'][run]:.2f} epochs; held-out windows extracted {h['extracted']}/{h['windows']}, "
            f"mean matched {h['mean_matched_tokens']:.2f} tokens"
        )
    lines += [
        "",
        f"{'':>10}{'duplicated run':^34}{'dedup run':^34}",
        f"{'k':>4}{'docs':>6}" + f"{'exposures':>11}{'extracted':>11}{'matched':>12}" * 2,
    ]
    for row in results["per_count"]:
        cells = "".join(
            f"{r['exposures']:>11.1f}{r['extracted']:>8}/{r['windows']:<2}{r['mean_matched_tokens']:>12.2f}"
            for r in (row["duplicated"], row["dedup"])
        )
        lines.append(f"{row['copies']:>4}{row['documents']:>6}{cells}")
    return "\n".join(lines)


def plot_results(results: dict[str, Any], path: Path) -> None:
    """Extraction rate and mean matched continuation against copies k, both runs (a small PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["per_count"]
    ks = [r["copies"] for r in rows]
    cfg = results["config"]
    fig, (rate_ax, match_ax) = plt.subplots(1, 2, figsize=(8, 3.2), dpi=100)
    for run, style in (("duplicated", "o-"), ("dedup", "s--")):
        loss = results["heldout"][run]["eval_loss"]
        label = f"{run} (held-out loss {loss:.3f})"
        rate_ax.plot(ks, [r[run]["extracted"] / max(r[run]["windows"], 1) for r in rows], style, label=label)
        match_ax.plot(ks, [r[run]["mean_matched_tokens"] for r in rows], style, label=label)
    rate_ax.set(
        ylabel=f"extracted ({cfg['continuation_tokens']} of {cfg['continuation_tokens']} tokens)",
        ylim=(-0.03, 1.03),
    )
    match_ax.set(ylabel="mean matched continuation (tokens)")
    for ax in (rate_ax, match_ax):
        ax.set(xscale="log", xlabel="copies k in the duplicated corpus")
        ax.set_xticks(ks, [str(k) for k in ks])
    match_ax.legend(fontsize=7)
    fig.suptitle(f"{cfg['prefix_tokens']}-token prompts, one window per planted document", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def load_planted_corpus(cfg: DuplicationSection) -> PlantedCorpus:
    """Read the configured training and held-out documents and plant the duplicates as `cfg` says."""
    train_raw, valid_raw = load_raw_datasets(
        DataConfig(train_file=cfg.train_file, validation_file=cfg.validation_file)
    )
    return plant_duplicates(
        list(train_raw["text"]),
        list(valid_raw["text"]),
        cfg.counts,
        cfg.documents_per_count,
        cfg.seed,
        cfg.min_document_chars,
    )


def run_analysis(cfg: DuplicationSection) -> dict[str, Any]:
    """Build both corpora, train both runs, probe them; writes results.json and duplication.png."""
    root = Path(cfg.output_root)
    corpus = load_planted_corpus(cfg)
    root.mkdir(parents=True, exist_ok=True)
    write_jsonl(corpus.deduplicated, root / "dedup.jsonl")
    write_jsonl(corpus.duplicated, root / "duplicated.jsonl")
    write_jsonl(corpus.heldout, root / "heldout.jsonl")
    print(
        f"corpora: {len(corpus.deduplicated)} documents deduplicated, {len(corpus.duplicated)} with duplicates; "
        f"{len(corpus.heldout)} held out",
        flush=True,
    )
    tokenizer_dir = build_shared_tokenizer(cfg, corpus.deduplicated)
    evals = train_runs(cfg)
    probes = {run: probe_run(root / run, corpus, cfg) for run in RUNS}
    texts = {"dedup": corpus.deduplicated, "duplicated": corpus.duplicated}
    tokens = {run: count_tokens(texts[run], tokenizer_dir) for run in RUNS}
    results = summarize(cfg, corpus, evals, probes, tokens)
    (root / "results.json").write_text(json.dumps(results, indent=2))
    plot_results(results, root / "duplication.png")
    return results


def main(argv: list[str], default_config: str | Path | None = None) -> int:
    """Entry point of recipes/analysis/duplication/run.py."""
    try:
        cfg = parse_config(DuplicationConfig, argv, default_config).duplication
        results = run_analysis(cfg)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(format_results(results))
    print(
        f"\nresults: {Path(cfg.output_root) / 'results.json'}, plot: {Path(cfg.output_root) / 'duplication.png'}"
    )
    return 0
