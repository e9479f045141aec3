"""SimCSE sentence embeddings: `accelerate launch recipes/contrastive/train.py [CONFIG.yaml] [--k=v ...]`."""

import sys
from pathlib import Path

from pretrain.objectives.contrastive import Contrastive
from pretrain.runner import main

if __name__ == "__main__":
    sys.exit(main(Contrastive, default_config=Path(__file__).with_name("config.yaml")))
