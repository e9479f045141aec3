"""Scaling laws: FLOP and parameter counting (`flops`), compute-optimal planning (`planning`,
`pretrain plan`), fitting L(N, D) to finished runs (`fitting`, `pretrain fit`) and the sweep driver.

May import: objectives, data, config, settings. Never train, eval, hub, runner or cli.
"""
