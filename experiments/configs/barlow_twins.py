"""Barlow Twins (Zbontar et al. ICML 2021): lambda = 5e-3 off-diagonal weight.
`--config experiments/configs/barlow_twins.py[:dataset]`

Expected: ImageNet ResNet-50, 1000 ep, 8192-d projector: 73.2; CIFAR-10 ResNet-18 (solo-learn) ~92.
"""
import common


def get_config(dataset: str = "fashion_mnist"):
  c = common.base_config("barlow_twins", dataset)
  if dataset == "fashion_mnist":
    c.model.projector = dict(kind="mlp", hidden_dim=512, out_dim=512, num_layers=3)
    return common.fmnist_cpu(c)
  if dataset == "imagenet2012":
    common.lars(c, 0.2, 1.5e-6, 2048)
    c.model.projector = dict(kind="mlp", hidden_dim=8192, out_dim=8192, num_layers=3)
    c.expected_linear_top1 = 73.2
    return common.set_epochs(c, 1000)
  common.lars(c, 0.3, 1e-4, 256)
  c.model.projector = dict(kind="mlp", hidden_dim=2048, out_dim=2048, num_layers=3)
  return common.set_epochs(c, 1000)
