"""Zero-shot multiple choice: accuracy above chance on obvious questions, scores equal hand computations."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, run_recipe
from transformers import GPT2Config, GPT2LMHeadModel

from pretrain.eval.cli import main as eval_main
from pretrain.eval.compression import load_causal_lm
from pretrain.eval.multiple_choice import (
    Question,
    compute_accuracy,
    encode_pair,
    load_questions,
    score_choices,
)

QUESTIONS = REPO / "tests" / "data" / "multiple_choice.jsonl"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """A tiny causal model trained briefly on the embedded corpus (Python's documentation)."""
    out = tmp_path_factory.mktemp("multiple-choice") / "lm"
    run_recipe("causal", out, "--train.max_steps=60")
    return out


def _hand_scores(model, tokenizer, question, prefix_lm: bool) -> list[float]:
    """Each choice alone, unpadded: sum over its tokens of log p(token | everything before it)."""
    scores = []
    for choice in question.choices:
        context, continuation = encode_pair(tokenizer, question.context, choice)
        context = context if prefix_lm else [tokenizer.eos_token_id, *context]
        ids = torch.tensor([context + continuation])
        inputs = {"input_ids": ids}
        if prefix_lm:
            n, p = ids.shape[1], len(context)
            allowed = [[j <= i or (i < p and j < p) for j in range(n)] for i in range(n)]
            inputs["attention_mask"] = torch.tensor(allowed)[None, None]
            inputs["position_ids"] = torch.arange(n)[None]
        with torch.no_grad():
            log_probs = torch.log_softmax(model(**inputs).logits[0].double(), dim=-1)
        total = 0.0
        for k, token in enumerate(continuation):
            total += log_probs[len(context) + k - 1, token].item()
        scores.append(total)
    return scores


def test_accuracy_is_above_chance_and_scores_match_a_hand_computation(model_dir):
    model, tokenizer = load_causal_lm(model_dir)
    questions = load_questions(QUESTIONS)
    scores = score_choices(model, tokenizer, questions, batch_size=5)  # batches cut across questions
    for question, got in zip(questions, scores, strict=True):
        np.testing.assert_allclose(got, _hand_scores(model, tokenizer, question, prefix_lm=False), rtol=1e-5)

    accuracy = compute_accuracy(questions, scores)
    chance = np.mean([1 / len(q.choices) for q in questions])
    assert accuracy["accuracy"] > chance + 0.3, accuracy
    assert accuracy["accuracy_norm"] > chance + 0.3, accuracy
    by_hand = np.mean([int(np.argmax(s)) == q.label for q, s in zip(questions, scores, strict=True)])
    assert accuracy["accuracy"] == by_hand


def test_length_normalisation_divides_by_choice_bytes():
    questions = [Question("ctx", ("a", "bbbb"), 1), Question("ctx", ("a", "bbbb"), 0)]
    # "a" wins on the sum (-2 > -4) but loses per byte (-2 < -1).
    scores = [np.array([-2.0, -4.0]), np.array([-2.0, -4.0])]
    assert compute_accuracy(questions, scores) == {"accuracy": 0.5, "accuracy_norm": 0.5}
    assert compute_accuracy(questions[:1], scores[:1]) == {"accuracy": 0.0, "accuracy_norm": 1.0}


def test_context_and_choice_are_joined_like_lm_evaluation_harness(model_dir):
    _, tokenizer = load_causal_lm(model_dir)
    decode = tokenizer.backend_tokenizer.decode
    for context, choice, joined in (
        ("Return the", "value", "Return the value"),
        ("Return the ", "value", "Return the value"),
        ("Return the", " value", "Return the value"),
        ("Line one\n", "Line two", "Line one\nLine two"),
    ):
        ctx, cont = encode_pair(tokenizer, context, choice)
        assert decode(ctx) + decode(cont) == joined


def test_prefix_lm_reads_the_context_bidirectionally(model_dir):
    _, tokenizer = load_causal_lm(model_dir)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=64, n_layer=2, n_head=2)
    ).eval()
    questions = load_questions(QUESTIONS)[:4]
    prefix = score_choices(model, tokenizer, questions, prefix_lm=True, batch_size=3)
    causal = score_choices(model, tokenizer, questions, prefix_lm=False, batch_size=3)
    for question, got in zip(questions, prefix, strict=True):
        np.testing.assert_allclose(got, _hand_scores(model, tokenizer, question, prefix_lm=True), rtol=1e-5)
    assert not np.allclose(np.concatenate(prefix), np.concatenate(causal))


def test_eval_cli_multiple_choice_mode(model_dir, tmp_path, capsys):
    assert eval_main(["--model", str(model_dir), "--multiple-choice", str(QUESTIONS)]) == 0
    printed = capsys.readouterr().out
    assert "accuracy_norm" in printed and "causal" in printed
    saved = json.loads((model_dir / "multiple_choice.json").read_text())
    assert saved["questions"] == 12 and math.isclose(saved["chance"], np.mean([1 / 4] * 4 + [1 / 3] * 8))

    prefix_dir = tmp_path / "prefix"
    GPT2LMHeadModel(
        GPT2Config(vocab_size=2048, n_positions=64, n_embd=32, n_layer=1, n_head=2)
    ).save_pretrained(prefix_dir)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (prefix_dir / name).write_bytes((model_dir / name).read_bytes())
    (prefix_dir / "eval_results.json").write_text(json.dumps({"objective": "prefix_lm"}))
    output = tmp_path / "mc.json"
    args = ["--model", str(prefix_dir), "--multiple-choice", str(QUESTIONS), "--output", str(output)]
    assert eval_main(args) == 0
    assert json.loads(output.read_text())["scoring"] == "bidirectional prefix"
    capsys.readouterr()

    assert eval_main([*args, "--memorization"]) == 1
    assert "not both" in capsys.readouterr().err
    (prefix_dir / "eval_results.json").write_text(json.dumps({"objective": "masked"}))
    assert eval_main(args) == 1
    assert "need a causal or prefix-LM model" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"context": "a", "choices": ["b", "c"]}', "KeyError"),
        ('{"context": "a", "choices": ["b", "c"], "label": 2}', "0 <= label < choices"),
        ('{"context": "", "choices": ["b", "c"], "label": 0}', "non-empty context"),
        ("not json", "JSONDecodeError"),
    ],
)
def test_malformed_question_files_name_the_line(model_dir, tmp_path, capsys, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"context": "fine", "choices": ["x", "y"], "label": 0}\n' + line + "\n")
    assert eval_main(["--model", str(model_dir), "--multiple-choice", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and f"{path}:2" in err and message in err


def test_hellaswag_and_piqa_field_names_are_read(tmp_path):
    path = tmp_path / "mixed.jsonl"
    rows = [
        {"ctx": "A man", "endings": ["runs", "sits", "flies", "swims"], "label": 3},
        {"goal": "Open a jar", "sol1": "twist the lid", "sol2": "eat the lid", "label": 0},
    ]
    path.write_text("\n".join(map(json.dumps, rows)) + "\n")
    first, second = load_questions(path)
    assert first.context == "A man" and first.choices[3] == "swims" and first.label == 3
    assert second.choices == ("twist the lid", "eat the lid") and second.label == 0
