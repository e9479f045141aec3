"""The six objectives, each one module with its config section, collator, loss, metrics and model
factory, plus their shared base (`base`), collator helpers and the model-config builders (`models`).

`OBJECTIVES` maps names to classes lazily (no import-time registration).

May import: data, config, settings. Never train, eval, scaling, hub, runner or cli.
"""

from __future__ import annotations

import importlib

from pretrain.config import ConfigError
from pretrain.objectives.base import Objective

OBJECTIVES: dict[str, str] = {
    "causal": "pretrain.objectives.causal:CausalLM",
    "contrastive": "pretrain.objectives.contrastive:Contrastive",
    "t5": "pretrain.objectives.t5:SpanCorruption",
    "prefix_lm": "pretrain.objectives.prefix_lm:PrefixLM",
    "permutation": "pretrain.objectives.permutation:PermutationLM",
    "masked": "pretrain.objectives.masked:MaskedLM",
}


def get_objective(name: str) -> type[Objective]:
    """The objective class registered under `name`."""
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}; choose one of {sorted(OBJECTIVES)}")
    module, _, cls = OBJECTIVES[name].partition(":")
    return getattr(importlib.import_module(module), cls)
