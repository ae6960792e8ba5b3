"""Experiments composed of training runs: core-set selection via proxy, ranking comparison."""
