"""DHEL (Koromilas et al.  `--config experiments/configs/dhel.py[:dataset]`

DHEL (Koromilas et al. ICML 2024), official-code form (include_augs=True).
Expected linear probe: CIFAR-10 87.4, CIFAR-100 59.4 (ResNet-18, 200 epochs, PAPERS.md).
"""
import common


def get_config(dataset: str = "fashion_mnist"):
  c = common.base_config("dhel", dataset)
  c.loss.temperature = 0.3
  c.loss.include_augs = True
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
