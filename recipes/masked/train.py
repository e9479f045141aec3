"""BERT/RoBERTa-style masked language modelling: `accelerate launch recipes/masked/train.py [CONFIG.yaml] [--k=v ...]`."""

import sys
from pathlib import Path

from pretrain.objectives.masked import MaskedLM
from pretrain.runner import main

if __name__ == "__main__":
    sys.exit(main(MaskedLM, default_config=Path(__file__).with_name("config.yaml")))
