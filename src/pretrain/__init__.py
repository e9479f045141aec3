"""Pretraining recipes: every classic objective through one trainer and one evaluation harness.

Where things live (imports run downwards only; tests/test_layout.py checks it):

    cli, runner                 entry point and one run end to end
    train, hub                  the loop and its checkpoints; pushing to the Hub
    eval, scaling, prepare      the harness and probes; scaling laws; data preparation
    objectives                  the six objectives and their model builders
    data                        raw text, tokenizer, packing, loaders
    config, settings            the config system and its sections
"""
