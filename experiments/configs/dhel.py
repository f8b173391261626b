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
  if dataset == "fashion_mnist":
    return common.fmnist_cpu(c)
  if dataset == "imagenet2012":
    common.lars(c, 0.3, 1e-6, 4096)
    c.model.projector = dict(kind="mlp", hidden_dim=2048, out_dim=128, num_layers=2)
    return common.set_epochs(c, 100)
  common.lars(c, 0.4, 1e-5, 256)
  c.model.projector = dict(kind="mlp", hidden_dim=2048, out_dim=256, num_layers=2)
  c.expected_linear_top1 = {"cifar10": 87.4, "cifar100": 59.4, "stl10": None}[dataset]
  return common.set_epochs(c, 200)
