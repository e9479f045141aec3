"""The Hugging Face Hub: pushing runs and checkpoints (`push`, `pretrain push`) and model cards.

May import: config, settings. It sees a trainer only as the value passed to `push_checkpoint`.
"""
