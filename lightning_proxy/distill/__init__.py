"""Dataset distillation: a small synthetic training set made to stand in for a pool (the 000 paper's last proxy).

:mod:`~lightning_proxy.datamodules.synthetic` is the file a datamodule trains on (``--data.synthetic path.npz``);
:mod:`~lightning_proxy.distill.matching` makes one by distribution matching or gradient matching.
"""

from lightning_proxy.datamodules.synthetic import SyntheticSet, load_synthetic, save_synthetic

__all__ = ["SyntheticSet", "load_synthetic", "save_synthetic"]
