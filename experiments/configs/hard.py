"""Wang & Liu's hard contrastive loss (tau=0.  `--config experiments/configs/hard.py[:dataset]`

Wang & Liu's hard contrastive loss (tau=0.7, upper-alpha quantile of negatives). Table 1: 84.19 (CIFAR-10).
Expected linear probe: CIFAR-10 84.19 (ResNet-18, 200 epochs, PAPERS.md).
"""
import common


def get_config(dataset: str = "fashion_mnist"):
  c = common.base_config("hard", dataset)
  c.loss.temperature = 0.7
  c.loss.alpha = 0.1
  if dataset == "fashion_mnist":
    return common.fmnist_cpu(c)
  if dataset == "imagenet2012":
    common.lars(c, 0.3, 1e-6, 4096)
    c.model.projector = dict(kind="mlp", hidden_dim=2048, out_dim=128, num_layers=2)
    return common.set_epochs(c, 100)
  common.lars(c, 0.4, 1e-5, 256)
  c.model.projector = dict(kind="mlp", hidden_dim=2048, out_dim=256, num_layers=2)
  c.expected_linear_top1 = {"cifar10": 84.19, "cifar100": None, "stl10": None}[dataset]
  return common.set_epochs(c, 200)
