"""DHEL, the decoupled hyperspherical energy loss (Koromilas et al., ICML 2024, arXiv 2405.18045;
docs/papers.md §B), in the official code's form (`loss.include_augs=True`: the same-view
energies of both views; False gives the paper's form). Use it with
`--config experiments/configs/dhel.py[:dataset]` (dataset: fashion_mnist, the CPU-sized default,
or cifar10, cifar100, stl10, imagenet2012). Expected linear probe: CIFAR-10 87.4, CIFAR-100 59.4
(ResNet-18, 200 epochs; docs/papers.md §B).
"""
import common


def get_config(dataset: str = "fashion_mnist"):
  c = common.base_config("dhel", dataset)
  return common.contrastive_recipe(c, dataset, {"cifar10": 87.4, "cifar100": 59.4, "stl10": None})
