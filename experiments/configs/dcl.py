"""DCL, decoupled contrastive learning (Yeh et al., ECCV 2022, arXiv 2110.06848): NT-Xent with
the positive left out of the denominator (2M-2 terms; docs/papers.md §B). Use it with
`--config experiments/configs/dcl.py[:dataset]` (dataset: fashion_mnist, the CPU-sized default,
or cifar10, cifar100, stl10, imagenet2012). Expected linear probe: CIFAR-10 86.0, CIFAR-100 58.1
(ResNet-18, 200 epochs; Koromilas et al.'s best baseline, docs/papers.md §B).
"""
import common


def get_config(dataset: str = "fashion_mnist"):
  c = common.base_config("dcl", dataset)
  return common.contrastive_recipe(c, dataset, {"cifar10": 86.0, "cifar100": 58.1, "stl10": None})
