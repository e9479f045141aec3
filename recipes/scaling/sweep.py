"""Scaling sweep: `python recipes/scaling/sweep.py [SWEEP.yaml] [--sweep.key=value ...]`."""

import sys
from pathlib import Path

from pretrain.scaling.sweep import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], default_config=Path(__file__).with_name("sweep.yaml")))
