"""Evaluation: the one harness (`harness`: loss, perplexity, bits per byte, objective metrics), the
LM-as-lossless-compressor (`compression`), the memorization probe, the multiple-choice scorer and
`pretrain eval` (`cli`).

May import: objectives, data, config, settings. Never train, hub, runner or cli.
"""
