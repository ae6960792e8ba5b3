"""Experiments composed of training runs: core-set selection and active learning via proxy, proxy-dataset sweeps.

``proxy_quality`` scores proxy strategies from a results table (the 000 paper's metrics).
"""

from lightning_proxy.experiments.quality import proxy_quality

__all__ = ["proxy_quality"]
