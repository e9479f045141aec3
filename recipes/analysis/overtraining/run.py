"""Over-training at a fixed size: `python recipes/analysis/overtraining/run.py [CONFIG.yaml] [--overtraining.k=v ...]`."""

import sys
from pathlib import Path

from pretrain.scaling.overtraining import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], default_config=Path(__file__).with_name("config.yaml")))
