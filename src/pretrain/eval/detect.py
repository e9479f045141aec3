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


def check_model_dir(model_dir: Path, wanted: str = "a finished run") -> None:
    """Refuse a folder without config.json, saying so plainly when it is a training checkpoint."""
    if (model_dir / "config.json").is_file():
        return
    if (model_dir / "trainer_state.json").is_file():
        raise ConfigError(
            f"--model {model_dir} is a training checkpoint (weights and optimizer state, no config.json or "
            f"tokenizer), not a saved model; give the run's output_dir {model_dir.parent} once it has finished, "
            f"or finish it with --train.resume_from_checkpoint={model_dir}"
        )
    raise ConfigError(f"--model {model_dir} has no config.json; give the output_dir of {wanted}")


def detect_objective(model_dir: Path) -> str:
    """The objective a saved model was trained with."""
    results = model_dir / "eval_results.json"
    if results.is_file():
        name = json.loads(results.read_text()).get("objective")
        if name:
            return name
    if (model_dir / "modules.json").is_file():
        return "contrastive"
    check_model_dir(model_dir)
    config = model_dir / "config.json"
    architectures = json.loads(config.read_text()).get("architectures") or [""]
    return _ARCHITECTURE_OBJECTIVES.get(architectures[0], "causal")
