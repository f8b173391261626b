"""BYOL (Grill et al. 2020): EMA target, MLP predictor, cosine loss.
`--config experiments/configs/byol.py[:dataset]`

Expected: ImageNet ResNet-50, 300 ep: 72.5 (BYOL paper); CIFAR-10 ResNet-18 (solo-learn, 1000 ep) ~92.6.
"""
import common


def get_config(dataset: str = "fashion_mnist"):
  c = common.base_config("byol", dataset)
  if dataset == "fashion_mnist":
    return common.fmnist_cpu(c)
  c.ema.base = 0.996 if dataset != "imagenet2012" else 0.99
  if dataset == "imagenet2012":
    common.lars(c, 0.2, 1.5e-6, 4096)
    c.model.projector = dict(kind="mlp", hidden_dim=4096, out_dim=256, num_layers=2)
    c.model.predictor = dict(hidden_dim=4096, num_layers=2)
    c.expected_linear_top1 = 72.5
    return common.set_epochs(c, 300)
  common.lars(c, 1.0, 1e-5, 256)
  c.model.projector = dict(kind="mlp", hidden_dim=4096, out_dim=256, num_layers=2)
  c.model.predictor = dict(hidden_dim=4096, num_layers=2)
  return common.set_epochs(c, 1000)
