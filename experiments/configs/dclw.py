"""DCLW: weighted decoupled contrastive loss (Yeh et al. ECCV 2022).
`--config experiments/configs/dclw.py[:dataset]`

The README's worked example of adding a method: the loss `jaxssl.losses.contrastive.dclw`,
one `Method` entry in `jaxssl/methods/__init__.py` (with its new hyperparameter
`loss.sigma`), and this file.

Expected linear probe (Yeh et al., Table 2, ResNet-18, 200 epochs, batch 256): CIFAR-10 ~84.9
(DCLW, SimCLR augmentations), CIFAR-100 ~58.4 — the paper's numbers, not reproduced here.
"""
import common


def get_config(dataset: str = "fashion_mnist"):
  c = common.base_config("dclw", dataset)
  return common.contrastive_recipe(c, dataset)
