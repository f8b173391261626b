"""KCL, the kernel contrastive loss (Koromilas et al., ICML 2024, arXiv 2405.18045;
docs/papers.md §B), with the Gaussian kernel, t = 2 and gamma = 16. Use it with
`--config experiments/configs/kcl.py[:dataset]` (dataset: fashion_mnist, the CPU-sized default,
or cifar10, cifar100, stl10, imagenet2012). Expected linear probe: CIFAR-10 86.5, CIFAR-100 58.5
(ResNet-18, 200 epochs; docs/papers.md §B, which marks these two numbers as unverified).
"""
import common


def get_config(dataset: str = "fashion_mnist"):
  c = common.base_config("kcl", dataset)
  return common.contrastive_recipe(c, dataset, {"cifar10": 86.5, "cifar100": 58.5, "stl10": None})
