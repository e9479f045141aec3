"""T5 span corruption: `accelerate launch recipes/t5/train.py [CONFIG.yaml] [--k=v ...]`."""

import sys
from pathlib import Path

from pretrain.objectives.t5 import SpanCorruption
from pretrain.runner import main

if __name__ == "__main__":
    sys.exit(main(SpanCorruption, default_config=Path(__file__).with_name("config.yaml")))
