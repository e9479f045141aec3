"""XLNet permutation language modelling: `accelerate launch recipes/permutation/train.py [CONFIG.yaml] [--k=v ...]`."""

import sys
from pathlib import Path

from pretrain.objectives.permutation import PermutationLM
from pretrain.runner import main

if __name__ == "__main__":
    sys.exit(main(PermutationLM, default_config=Path(__file__).with_name("config.yaml")))
