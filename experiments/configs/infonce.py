"""InfoNCE (van den Oord et al. 2018, arXiv 1807.03748) in its symmetric cross-view form, as in
CLIP and MoCo: each embedding of one view is contrasted with the M embeddings of the other view
(M denominator terms), averaged over both directions (docs/papers.md §B). Use it with
`--config experiments/configs/infonce.py[:dataset]` (dataset: fashion_mnist, the CPU-sized
default, or cifar10, cifar100, stl10, imagenet2012). Expected linear probe: CIFAR-10 86.0,
CIFAR-100 58.1 (ResNet-18, 200 epochs; Koromilas et al.'s best baseline, docs/papers.md §B).
"""
import common


def get_config(dataset: str = "fashion_mnist"):
  c = common.base_config("infonce", dataset)
  return common.contrastive_recipe(c, dataset, {"cifar10": 86.0, "cifar100": 58.1, "stl10": None})
