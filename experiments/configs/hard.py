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
