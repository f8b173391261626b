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
  if dataset == "fashion_mnist":
    return common.fmnist_cpu(c)
  if dataset == "imagenet2012":
    common.lars(c, 0.3, 1e-6, 4096)
    c.model.projector = dict(kind="mlp", hidden_dim=2048, out_dim=128, num_layers=2)
    return common.set_epochs(c, 100)
  common.lars(c, 0.4, 1e-5, 256)
  c.model.projector = dict(kind="mlp", hidden_dim=2048, out_dim=256, num_layers=2)
  c.expected_linear_top1 = {"cifar10": 74.83, "cifar100": None, "stl10": None}[dataset]
  return common.set_epochs(c, 200)
