"""Training: the one loop (`trainer`), optimizer and schedules (`optim`), checkpoints, monitoring
(metrics, MFU, curves), the launcher glue for DDP / DeepSpeed (`distributed`), in-loop downstream
tasks (`downstream`) and the fine-tuning probe `pretrain probe` (`probe`).

May import: eval, scaling, objectives, data, config, settings. Never hub, runner or cli: the runner
hands the trainer what it needs from above (e.g. the Hub push as `after_save`).
"""
