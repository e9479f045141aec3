"""Pretraining recipes: every classic objective through one trainer and one evaluation harness."""
