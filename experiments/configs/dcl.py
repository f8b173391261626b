"""DCL: NT-Xent without the positive in the denominator (Yeh et al.  `--config experiments/configs/dcl.py[:dataset]`

DCL: NT-Xent without the positive in the denominator (Yeh et al. 2022).
Expected linear probe: CIFAR-10 86.0, CIFAR-100 58.1 (ResNet-18, 200 epochs, PAPERS.md).
"""
import common


def get_config(dataset: str = "fashion_mnist"):
  c = common.base_config("dcl", dataset)
  c.loss.temperature = 0.2
  if dataset == "fashion_mnist":
    return common.fmnist_cpu(c)
  if dataset == "imagenet2012":
    common.lars(c, 0.3, 1e-6, 4096)
    c.model.projector = dict(kind="mlp", hidden_dim=2048, out_dim=128, num_layers=2)
    return common.set_epochs(c, 100)
  common.lars(c, 0.4, 1e-5, 256)
  c.model.projector = dict(kind="mlp", hidden_dim=2048, out_dim=256, num_layers=2)
  c.expected_linear_top1 = {"cifar10": 86.0, "cifar100": 58.1, "stl10": None}[dataset]
  return common.set_epochs(c, 200)
