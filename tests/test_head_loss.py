"""The chunked LM-head loss equals the full-logits loss (value, every gradient, evaluation statistics:
bits per byte, accuracy, per-target losses), never saves (tokens, vocab) logits for backward, and
leaves the saved model a stock transformers model."""

from __future__ import annotations

import copy

import pytest
import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

from pretrain.config import ConfigError
from pretrain.objectives.base import token_loss
from pretrain.objectives.head_loss import ChunkedLMHead, install_head, lm_head_loss

VOCAB = 320


def tiny_model(family: str) -> torch.nn.Module:
    torch.manual_seed(0)
    tokens = {"vocab_size": VOCAB, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2}
    if family == "llama":
        config = LlamaConfig(
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
            **tokens,
        )
    else:
        config = GPT2Config(
            n_embd=48, n_layer=2, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **tokens
        )
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input_ids (4, 37), shifted labels with some -100 (a prefix, the last position), token bytes."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (4, 37), generator=g)
    labels = torch.nn.functional.pad(ids[:, 1:], (0, 1), value=-100)
    labels[1, :9] = -100
    token_bytes = torch.randint(1, 5, (VOCAB,), generator=g)
    return ids, labels, token_bytes


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("chunk_tokens", [1, 29, 4096])
def test_chunked_training_loss_and_gradients_equal_the_full_logits(family, chunk_tokens):
    ours, stock = tiny_model(family), tiny_model(family)
    install_head(ours, "chunked")
    assert isinstance(ours.lm_head, ChunkedLMHead) and type(stock.lm_head) is torch.nn.Linear
    ids, labels, token_bytes = batch()
    out = lm_head_loss(
        ours, {"input_ids": ids, "use_cache": False}, labels, token_bytes, "chunked", chunk_tokens
    )
    ref = token_loss(stock(input_ids=ids).logits, labels, token_bytes, with_stats=False)
    (out.loss_sum * 0.37).backward()  # the trainer scales the summed loss before backward
    (ref.loss_sum * 0.37).backward()
    assert int(out.num_targets) == int(ref.num_targets) == 4 * 36 - 9
    torch.testing.assert_close(out.loss_sum, ref.loss_sum, rtol=1e-6, atol=1e-5)
    for (name, p), q in zip(ours.named_parameters(), stock.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_chunked_loss_under_bf16_autocast_matches_the_stock_head_under_autocast():
    ours, stock = tiny_model("llama"), tiny_model("llama")
    install_head(ours, "chunked")
    ids, labels, token_bytes = batch(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = lm_head_loss(ours, {"input_ids": ids, "use_cache": False}, labels, token_bytes, "chunked", 16)
        ref = token_loss(stock(input_ids=ids).logits, labels, token_bytes, with_stats=False)
    assert out.loss_sum.dtype == torch.float32
    torch.testing.assert_close(out.loss_sum, ref.loss_sum, rtol=2e-3, atol=0.0)
    out.loss_sum.backward()
    ref.loss_sum.backward()
    grad, ref_grad = ours.lm_head.weight.grad, stock.lm_head.weight.grad
    assert grad.dtype == torch.float32
    assert float((grad - ref_grad).norm() / ref_grad.norm()) < 2e-2  # bf16 matmuls on both sides


def test_no_full_logits_are_saved_for_backward():
    ids, labels, token_bytes = batch()
    n = ids.numel()
    largest = {}
    for kernel in ("chunked", "stock"):
        model = install_head(tiny_model("llama"), kernel)
        sizes = []

        def pack(t, sizes=sizes):
            sizes.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = lm_head_loss(model, {"input_ids": ids, "use_cache": False}, labels, token_bytes, kernel, 16)
        out.loss_sum.backward()
        largest[kernel] = max(sizes)
    assert largest["stock"] >= n * VOCAB  # the (b*t, v) logits
    hidden = 48
    assert n * VOCAB > VOCAB * hidden  # so the next line tells logits from weight-sized tensors
    assert largest["chunked"] <= max(VOCAB, n) * hidden  # (v, d) and (n, d) gradients, or activations


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_evaluation_statistics_equal_todays(family):
    ours, stock = tiny_model(family).eval(), tiny_model(family).eval()
    install_head(ours, "chunked")
    ids, labels, token_bytes = batch(3)
    with torch.no_grad():
        out = lm_head_loss(ours, {"input_ids": ids, "use_cache": False}, labels, token_bytes, "chunked", 10)
        ref = token_loss(stock(input_ids=ids).logits, labels, token_bytes, with_stats=True)
    torch.testing.assert_close(out.loss_sum, ref.loss_sum, rtol=1e-6, atol=1e-5)
    assert torch.equal(out.num_targets, ref.num_targets)
    assert torch.equal(out.stats["bytes"], ref.stats["bytes"])
    assert torch.equal(out.stats["correct"], ref.stats["correct"])
    assert torch.equal(out.target_ids, ref.target_ids)
    torch.testing.assert_close(out.target_losses, ref.target_losses, rtol=1e-6, atol=1e-5)


def test_objective_metrics_bits_per_byte_and_accuracy_equal_the_stock_kernel(tmp_path, cache_dir):
    """Through the CausalLM objective and the evaluation harness, after a few training steps (so the
    model predicts something), with document masks: eval_loss, bits per byte, accuracy to 1e-5."""
    from conftest import make_trainer

    from pretrain.eval.harness import evaluate
    from pretrain.objectives.causal import CausalLM
    from pretrain.settings import replace

    trainer = make_trainer(tmp_path, "--train.max_steps=4", "--data.document_mask=true")
    trainer.train()
    model = trainer.accelerator.unwrap_model(trainer.model)
    assert isinstance(model.lm_head, ChunkedLMHead)
    stock_model = copy.deepcopy(model)
    stock_model.lm_head.__class__ = torch.nn.Linear
    objective = trainer.objective
    stock_cfg = replace(objective.cfg, model={"loss_kernel": "stock"})
    stock_objective = CausalLM(stock_cfg, objective.tokenizer)
    ours = evaluate(objective, model, trainer.eval_data, Accelerator(), 8)
    ref = evaluate(stock_objective, stock_model, trainer.eval_data, Accelerator(), 8)
    assert ref["accuracy"] > 0.02  # trained a little: the comparison is not between zeros
    for key in ("eval_loss", "bits_per_byte", "accuracy", "perplexity"):
        assert ours[key] == pytest.approx(ref[key], rel=1e-5, abs=1e-5), key


def test_saved_model_is_stock_and_liger_is_refused_without_cuda(tmp_path):
    model = install_head(tiny_model("llama"), "chunked")
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded.lm_head) is torch.nn.Linear
    ids, _, _ = batch()
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(input_ids=ids).logits, loaded(input_ids=ids).logits)
    assert type(install_head(tiny_model("gpt2"), "stock").lm_head) is torch.nn.Linear
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="loss_kernel=liger needs a CUDA device"):
            install_head(tiny_model("llama"), "liger")
