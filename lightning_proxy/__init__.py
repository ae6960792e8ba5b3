"""lightning-proxy: cheaper deep-learning experiments by choosing data with cheap proxies."""

__version__ = "0.1.0"
