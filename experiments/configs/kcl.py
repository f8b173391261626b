"""KCL, the kernel contrastive loss (Koromilas et al., ICML 2024, arXiv 2405.18045;
docs/papers.md §B), with the Gaussian kernel, t = 2 and gamma = 16. Use it with
`--config experiments/configs/kcl.py[:dataset]` (dataset: fashion_mnist, the CPU-sized default,
or cifar10, cifar100, stl10, imagenet2012). Expected linear probe: CIFAR-10 86.5, CIFAR-100 58.5
(ResNet-18, 200 epochs; docs/papers.md §B, which marks these two numbers as unverified).
"""
import common


def get_config(dataset: str = "fashion_mnist"):
  c = common.base_config("kcl", dataset)
  if dataset == "fashion_mnist":
    return common.fmnist_cpu(c)
  if dataset == "imagenet2012":
    common.lars(c, 0.3, 1e-6, 4096)
    c.model.projector = dict(kind="mlp", hidden_dim=2048, out_dim=128, num_layers=2)
    return common.set_epochs(c, 100)
  common.lars(c, 0.4, 1e-5, 256)
  c.model.projector = dict(kind="mlp", hidden_dim=2048, out_dim=256, num_layers=2)
  c.expected_linear_top1 = {"cifar10": 86.5, "cifar100": 58.5, "stl10": None}[dataset]
  return common.set_epochs(c, 200)
