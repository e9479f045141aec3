"""Zero-shot multiple choice in the HellaSwag/PIQA style: which continuation does the model find likeliest?

Each question is a context, some choices and the index of the right one, one JSON object per line:
{"context": "...", "choices": ["...", "..."], "label": 0}. HellaSwag's (ctx, endings, label) and
PIQA's (goal, sol1, sol2, label) field names are read as well.

A choice's score is the log-likelihood of its tokens after the context (as lm-evaluation-harness
does: a space joins them unless one side already has whitespace; the context is tokenized alone,
so every choice sees the same context tokens). `accuracy` picks the highest summed log-likelihood;
`accuracy_norm` divides each sum by the choice's UTF-8 bytes first (lm-evaluation-harness' acc_norm
divides by characters), removing the bias toward short choices.

Causal checkpoints read [EOS] + context + choice causally, as after a document boundary in
training. Prefix-LM checkpoints read context + choice with the context as a bidirectional prefix
(the attention mask of pretrain.objectives.prefix_lm: prefix tokens see the whole prefix, choice
tokens see causally), positions from 0, as each document in prefix-LM training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from pretrain.data.text import DataError
from pretrain.eval.compression import load_causal_lm, max_positions

# Field names of other formats -> ours.
_ALIASES = {"ctx": "context", "goal": "context", "endings": "choices", "gold": "label"}


@dataclass(frozen=True)
class Question:
    context: str
    choices: tuple[str, ...]
    label: int


def load_questions(path: str | Path) -> list[Question]:
    """Questions of a .jsonl file; a malformed line is a DataError naming the line and the format."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"--multiple-choice {p} does not exist; give a .jsonl file of questions")
    questions = []
    for number, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            questions.append(_parse_question(line, f"{p}:{number}"))
    if not questions:
        raise DataError(f"{p} holds no questions; write one JSON object per line")
    return questions


def _parse_question(line: str, where: str) -> Question:
    expected = 'expected {"context": str, "choices": [str, ...], "label": int}'
    try:
        raw = json.loads(line)
        fields = {_ALIASES.get(k, k): v for k, v in raw.items()}
        if "choices" not in fields and "sol1" in fields:
            fields["choices"] = [fields[k] for k in ("sol1", "sol2", "sol3") if k in fields]
        context, choices, label = (
            str(fields["context"]),
            tuple(map(str, fields["choices"])),
            int(fields["label"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise DataError(f"{where}: not a question ({type(err).__name__}: {err}); {expected}") from err
    if not context.strip() or len(choices) < 2 or not 0 <= label < len(choices):
        raise DataError(f"{where}: needs a non-empty context, two or more choices and 0 <= label < choices")
    return Question(context, choices, label)


def encode_pair(tokenizer: PreTrainedTokenizerBase, context: str, choice: str) -> tuple[list[int], list[int]]:
    """(context ids, choice ids): trailing context whitespace moves to the choice, else a space joins them."""
    stripped = context.rstrip()
    joiner = context[len(stripped) :] or ("" if choice[:1].isspace() else " ")
    backend = tokenizer.backend_tokenizer
    return (
        backend.encode(stripped, add_special_tokens=False).ids,
        backend.encode(joiner + choice, add_special_tokens=False).ids,
    )


def prefix_lm_attention_mask(prefix_lengths: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Boolean (b, 1, t, t): causal, plus full attention among the first prefix_lengths[i] tokens of row i."""
    causal = torch.ones(seq_len, seq_len, dtype=torch.bool).tril()
    in_prefix = torch.arange(seq_len)[None, :] < prefix_lengths[:, None]  # (b, t)
    return (causal[None] | (in_prefix[:, :, None] & in_prefix[:, None, :]))[:, None]


@torch.no_grad()
def score_choices(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    questions: list[Question],
    prefix_lm: bool = False,
    batch_size: int = 16,
) -> list[np.ndarray]:
    """Summed log-likelihood (nats) of every choice of every question given its context."""
    positions = max_positions(model)
    rows = []  # (token ids, index of the first choice token, choice length)
    for q in questions:
        for choice in q.choices:
            context, continuation = encode_pair(tokenizer, q.context, choice)
            context = context if prefix_lm else [tokenizer.eos_token_id, *context]
            keep = positions - len(continuation)  # long contexts lose their oldest tokens
            if keep < 1:
                raise DataError(
                    f"a choice has {len(continuation)} tokens, more than the model's {positions} positions"
                )
            context = context[-keep:]
            rows.append((context + continuation, len(context), len(continuation)))
    scores = []
    for start in range(0, len(rows), batch_size):
        batch = score_rows(model, rows[start : start + batch_size], tokenizer.pad_token_id, prefix_lm)
        scores.extend(total for total, _ in batch)
    per_question, i = [], 0
    for q in questions:
        per_question.append(np.array(scores[i : i + len(q.choices)]))
        i += len(q.choices)
    return per_question


@torch.no_grad()
def score_rows(
    model: nn.Module, rows: list[tuple[list[int], int, int]], pad_id: int, prefix_lm: bool
) -> list[tuple[float, bool]]:
    """(summed log-probability, greedy) of each row's choice tokens, greedy meaning every choice token is
    the argmax; rows are (ids, index of the first choice token, choice length), right-padded (pads are
    never seen). lm-evaluation-harness' loglikelihood answers have this shape."""
    t = max(len(ids) for ids, _, _ in rows)
    device = next(model.parameters()).device
    input_ids = torch.full((len(rows), t), pad_id, dtype=torch.long)
    for i, (ids, _, _) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
    inputs: dict[str, torch.Tensor] = {"input_ids": input_ids}
    if prefix_lm:
        prefix_lengths = torch.tensor([start for _, start, _ in rows])
        inputs["attention_mask"] = prefix_lm_attention_mask(prefix_lengths, t)
        inputs["position_ids"] = torch.arange(t).expand(len(rows), t)
    inputs = {k: v.to(device) for k, v in inputs.items()}
    log_probs = torch.log_softmax(model(**inputs).logits.double(), dim=-1).cpu()  # (b, t, v)
    scores = []
    for i, (_, start, length) in enumerate(rows):
        targets = input_ids[i, start : start + length]
        # Position p predicts token p + 1.
        predicted = log_probs[i, start - 1 : start - 1 + length]  # (length, v)
        total = float(predicted.gather(1, targets[:, None]).sum())
        scores.append((total, bool((predicted.argmax(-1) == targets).all())))
    return scores


def compute_accuracy(questions: list[Question], scores: list[np.ndarray]) -> dict[str, float]:
    """accuracy (summed log-likelihood) and accuracy_norm (per UTF-8 byte of the choice)."""
    correct = correct_norm = 0
    for q, s in zip(questions, scores, strict=True):
        nbytes = np.array([max(len(c.encode("utf-8")), 1) for c in q.choices])
        correct += int(np.argmax(s) == q.label)
        correct_norm += int(np.argmax(s / nbytes) == q.label)
    n = len(questions)
    return {"accuracy": correct / n, "accuracy_norm": correct_norm / n}


def run_multiple_choice(model_dir: Path, path: str, objective: str) -> dict[str, Any]:
    """`pretrain eval --multiple-choice FILE.jsonl`: accuracies of a saved causal or prefix-LM model."""

    questions = load_questions(path)
    model, tokenizer = load_causal_lm(model_dir)
    scores = score_choices(model, tokenizer, questions, prefix_lm=objective == "prefix_lm")
    chance = float(np.mean([1 / len(q.choices) for q in questions]))
    return {
        "objective": objective,
        "scoring": "bidirectional prefix" if objective == "prefix_lm" else "causal",
        "questions": len(questions),
        **compute_accuracy(questions, scores),
        "chance": chance,
    }
