"""Prefix language modelling: `accelerate launch recipes/prefix_lm/train.py [CONFIG.yaml] [--k=v ...]`."""

import sys
from pathlib import Path

from pretrain.objectives.prefix_lm import PrefixLM
from pretrain.runner import main

if __name__ == "__main__":
    sys.exit(main(PrefixLM, default_config=Path(__file__).with_name("config.yaml")))
