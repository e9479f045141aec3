"""GPT-style causal language modelling: `accelerate launch recipes/causal/train.py [CONFIG.yaml] [--k=v ...]`."""

import sys
from pathlib import Path

from pretrain.objectives.causal import CausalLM
from pretrain.runner import main

if __name__ == "__main__":
    sys.exit(main(CausalLM, default_config=Path(__file__).with_name("config.yaml")))
