"""Task YAML files for lm-evaluation-harness (pretrain.eval.downstream adds this folder to its TaskManager)."""
