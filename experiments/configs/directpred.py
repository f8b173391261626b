"""DirectPred (Tian, Chen, Ganguli ICML 2021): linear predictor set from eig of the EMA'd correlation, p_j = sqrt(s_j/max s) + eps.
`--config experiments/configs/directpred.py[:dataset]`

STL-10 recipe (docs/papers.md §D): ResNet-18, batch 128, SGD lr 0.03, weight decay 4e-4, EMA 0.996, 100 epochs.
Expected: on ImageNet DirectPred ~ the 2-layer BN predictor (+2.5 points over a trained linear predictor at 300 ep).
"""
import common


def get_config(dataset: str = "fashion_mnist"):
  c = common.base_config("directpred", dataset)
  if dataset == "fashion_mnist":
    return common.fmnist_cpu(c)
  c.optim.name = "sgd"
  c.data.batch_size = 128
  c.optim.lr = 0.03
  c.optim.weight_decay = 4e-4
  c.ema.base = 0.996
  c.model.projector = dict(kind="mlp", hidden_dim=4096, out_dim=256, num_layers=2)
  return common.set_epochs(c, 100)
