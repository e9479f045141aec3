"""Tensor, pipeline and fully-sharded parallelism on 2 real CPU processes (gloo) equal one process.

Each layout's run (tests/parallel_runs.py, launched once per session) trains 4 optimizer steps with
2 accumulated micro-steps on the batches of the 1-process reference; its loss per step, gradient
norm and final weights must match the reference, its final folder must load with stock
`from_pretrained` in this (fresh) process, and a launch whose sharding would silently not happen
must stop before reading data.
"""

from __future__ import annotations

import json

import pytest
import torch
from parallel_runs import MAX_STEPS, launch, losses
from safetensors.torch import load_file

LAYOUTS = ("tp", "pp_gpipe", "pp_1f1b", "fsdp2")
LOSS_ATOL = 1e-6  # per-step loss, nats
WEIGHT_ATOL = 1e-5  # final parameters, with adam_epsilon=1e-6 (parallel_runs.SHAPE); measured <= 2.8e-6


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key].float(), b[key].float(), rtol=0, atol=atol, msg=key)


@pytest.mark.slow  # real 2-process launches (tests/parallel_runs.py)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_two_process_layout_equals_one_process(parallel_runs, layout):
    reference, out = parallel_runs.get("reference"), parallel_runs.get(layout)
    assert "world_size=2" in parallel_runs.log(layout)
    ref_records = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, MAX_STEPS + 1))
    for ref, got in zip(ref_records, records, strict=True):
        assert abs(got["loss"] - ref["loss"]) <= LOSS_ATOL, (got["step"], got["loss"], ref["loss"])
        # clipping sees the same global norm: one norm per mesh (TP/FSDP2), summed over stages (PP)
        assert got["grad_norm"] == pytest.approx(ref["grad_norm"], rel=1e-5), got["step"]
        assert got["tokens_seen"] == ref["tokens_seen"]  # 8 sequences per step in every layout
    assert losses(out)[MAX_STEPS] < losses(out)[1]
    assert_same_tensors(
        load_file(reference / "model.safetensors"), load_file(out / "model.safetensors"), WEIGHT_ATOL
    )
    # sharded checkpoints: DCP metadata beside the trainer state, `latest` on the last one
    for step in (2, MAX_STEPS):
        assert (out / f"checkpoint-{step}" / ".metadata").is_file()
        assert (out / f"checkpoint-{step}" / "trainer_state.json").is_file()
    assert (out / "latest").read_text() == f"checkpoint-{MAX_STEPS}"
    assert not list(out.glob(".tmp-checkpoint-*"))


@pytest.mark.slow  # a real 2-process launch (tests/parallel_runs.py)
def test_final_folders_load_with_from_pretrained_and_agree(parallel_runs):
    from transformers import AutoModelForCausalLM

    names = ("reference", *LAYOUTS)
    models = {name: AutoModelForCausalLM.from_pretrained(parallel_runs.get(name)) for name in names}
    reference = models["reference"].state_dict()
    batch = torch.randint(
        0, models["reference"].config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        ref_logits = models["reference"](batch).logits
    for name, model in models.items():
        assert not hasattr(model.config, "distributed_config"), name  # a plain folder, no layout left in it
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(), (
            name
        )  # still tied
        assert_same_tensors(reference, model.state_dict(), WEIGHT_ATOL)
        with torch.no_grad():
            torch.testing.assert_close(model(batch).logits, ref_logits, rtol=0, atol=1e-4, msg=name)


@pytest.mark.slow  # a real 2-process launch (tests/parallel_runs.py)
def test_fsdp_launch_config_on_cpu_is_refused_not_run_as_ddp(tmp_path, cache_dir):
    out = tmp_path / "fsdp"
    proc = launch(out, "fsdp", 2, check=False)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors and "asks for FSDP" in errors[0] and "dp_shard_size" in errors[0], proc.stderr[-2000:]
    assert not out.exists() or not any(out.iterdir())  # refused before anything was written


@pytest.mark.parametrize(
    ("objective", "overrides", "says"),
    [
        (
            "masked",
            ("--model.family=bert", "--parallel.tp_size=2"),
            "decoder-only models, not objective masked",
        ),
        ("t5", ("--model.family=t5", "--parallel.dp_shard_size=2"), "decoder-only models, not objective t5"),
        (
            "causal",
            ("--model.family=gpt2", "--parallel.tp_size=2"),
            "no tensor-parallel plan for model.family=gpt2",
        ),
        ("causal", ("--model.family=gpt2", "--parallel.pp_size=2"), "pipeline stages are built for llama"),
        (
            "prefix_lm",
            ("--model.family=llama", "--parallel.pp_size=2"),
            "objective prefix_lm adds attention masks",
        ),
        (
            "causal",
            ("--model.family=llama", "--parallel.pp_size=2", "--data.document_mask=true"),
            "data.document_mask",
        ),
    ],
)
def test_unsupported_objective_or_family_is_refused_at_config_time(objective, overrides, says):
    from pretrain.config import ConfigError, parse_config
    from pretrain.objectives import get_objective
    from pretrain.settings import make_run_config
    from pretrain.train.plan import check_parallel_family

    objective_cls = get_objective(objective)
    cfg = parse_config(make_run_config(objective_cls.Config), list(overrides))
    with pytest.raises(ConfigError, match=says) as err:
        check_parallel_family(cfg.parallel, cfg.model, cfg.data.document_mask, objective_cls)
    assert "\n" not in str(err.value) and ("what works" in str(err.value) or "use " in str(err.value))


@pytest.mark.parametrize(
    ("objective", "overrides"),
    [
        ("causal", ("--model.family=llama", "--parallel.tp_size=2")),
        ("causal", ("--model.family=qwen3", "--parallel.tp_size=2")),
        ("causal", ("--model.family=llama", "--parallel.pp_size=2")),
        ("causal", ("--model.family=gpt2", "--parallel.dp_shard_size=2")),
        ("prefix_lm", ("--model.family=llama", "--parallel.tp_size=2", "--parallel.dp_shard_size=2")),
    ],
)
def test_supported_layouts_pass_the_config_check(objective, overrides):
    from pretrain.config import parse_config
    from pretrain.objectives import get_objective
    from pretrain.settings import make_run_config
    from pretrain.train.plan import check_parallel_family

    objective_cls = get_objective(objective)
    cfg = parse_config(make_run_config(objective_cls.Config), list(overrides))
    check_parallel_family(cfg.parallel, cfg.model, cfg.data.document_mask, objective_cls)
