"""Wang & Liu's simple contrastive loss (CVPR 2021, arXiv 2012.09740; docs/papers.md §A):
minus the positive similarity plus lambda times the sum of the negative similarities, with
lambda = 1/(N-1), so no temperature. Use it with `--config experiments/configs/simple.py[:dataset]`
(dataset: fashion_mnist, the CPU-sized default, or cifar10, cifar100, stl10, imagenet2012).
Expected linear probe: CIFAR-10 74.83 (ResNet-18, 200 epochs, memory bank; Wang & Liu's
Table 1, docs/papers.md §A).
"""
import common


def get_config(dataset: str = "fashion_mnist"):
  c = common.base_config("simple", dataset)
  return common.contrastive_recipe(c, dataset, {"cifar10": 74.83, "cifar100": None, "stl10": None})
