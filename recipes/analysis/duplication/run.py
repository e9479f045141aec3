"""Duplication versus memorization: `python recipes/analysis/duplication/run.py [CONFIG.yaml] [--duplication.k=v ...]`."""

import sys
from pathlib import Path

from pretrain.eval.duplication import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], default_config=Path(__file__).with_name("config.yaml")))
