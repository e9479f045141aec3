"""Evaluation: the one harness (`harness`: loss, perplexity, bits per byte, objective metrics), the
LM-as-lossless-compressor (`compression`), the memorization probe, the multiple-choice scorer,
lm-evaluation-harness tasks (`downstream`, task YAMLs in `lm_eval_tasks/`), the `evaluate` metric
modules shipped in `metrics/`, and `pretrain eval` (`cli`, `downstream_cli`).

May import: objectives, data, config, settings. Never train, hub, runner or cli.
"""
