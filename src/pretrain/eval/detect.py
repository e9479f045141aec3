"""Which objective trained a saved model folder (eval_results.json, else its architecture)."""

from __future__ import annotations

import json
from pathlib import Path

from pretrain.config import ConfigError

# Architectures (config.json "architectures") whose objective is unambiguous.
_ARCHITECTURE_OBJECTIVES = {
    "T5ForConditionalGeneration": "t5",
    "XLNetLMHeadModel": "permutation",
    "BertForMaskedLM": "masked",
    "RobertaForMaskedLM": "masked",
    "BertForPreTraining": "masked",
}


def detect_objective(model_dir: Path) -> str:
    """The objective a saved model was trained with."""
    results = model_dir / "eval_results.json"
    if results.is_file():
        name = json.loads(results.read_text()).get("objective")
        if name:
            return name
    if (model_dir / "modules.json").is_file():
        return "contrastive"
    config = model_dir / "config.json"
    if not config.is_file():
        raise ConfigError(
            f"--model {model_dir} has no config.json; give a directory written by a recipe or save_pretrained"
        )
    architectures = json.loads(config.read_text()).get("architectures") or [""]
    return _ARCHITECTURE_OBJECTIVES.get(architectures[0], "causal")
