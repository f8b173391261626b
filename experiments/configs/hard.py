"""Wang & Liu's hard contrastive loss (CVPR 2021, arXiv 2012.09740; docs/papers.md §A): the
ordinary contrastive loss over only those negatives of each anchor that lie at or above its
upper-alpha quantile (`loss.alpha`), with tau = 0.7. Use it with
`--config experiments/configs/hard.py[:dataset]` (dataset: fashion_mnist, the CPU-sized default,
or cifar10, cifar100, stl10, imagenet2012). Expected linear probe: CIFAR-10 84.19 (ResNet-18,
200 epochs, memory bank; Wang & Liu's Table 1, docs/papers.md §A).
"""
import common


def get_config(dataset: str = "fashion_mnist"):
  c = common.base_config("hard", dataset)
  return common.contrastive_recipe(c, dataset, {"cifar10": 84.19, "cifar100": None, "stl10": None})
