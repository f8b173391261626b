"""SimSiam (Chen & He 2021): no EMA target (online network under stop-gradient), MLP predictor.
`--config experiments/configs/simsiam.py[:dataset]`

Expected: ImageNet ResNet-50, 100 ep: 68.1 (SimSiam paper); CIFAR-10 ResNet-18, 800 ep: 91.8.
"""
import common


def get_config(dataset: str = "fashion_mnist"):
  c = common.base_config("simsiam", dataset)
  c.model.predictor = dict(hidden_dim=128, num_layers=2)   # bottleneck predictor
  if dataset == "fashion_mnist":
    return common.fmnist_cpu(c)
  c.optim.name = "sgd"
  c.data.batch_size = 512 if dataset != "imagenet2012" else 256
  c.optim.lr = 0.05 * c.data.batch_size / 256
  c.optim.weight_decay = 5e-4 if dataset != "imagenet2012" else 1e-4
  c.model.projector = dict(kind="mlp", hidden_dim=2048, out_dim=2048, num_layers=3)
  c.model.predictor = dict(hidden_dim=512, num_layers=2)
  return common.set_epochs(c, 800 if dataset != "imagenet2012" else 100)
