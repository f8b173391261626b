"""The label-free collapse alarm: RankMe of z / r in the compiled step, and the norm of z."""
import json
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxssl import checkpoint as ckpt_lib
from jaxssl import loop, run
from jaxssl.errors import NumericalError
from _tiny import tiny_config

FMNIST = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
needs_fmnist = pytest.mark.skipif(not os.path.exists(FMNIST), reason="dataset-fashion-mnist not installed")

ALARM = ml_collections.ConfigDict(dict(policy="warn", min_rank_fraction_z=0.2, min_rank_fraction_r=0.01,
                                       min_norm_z=1e-4))


def test_alarm_rule_on_hand_made_records():
  spec = [1.0] * 8
  healthy = {"step": 0, "rankme_z": 5.0, "rankme_r": 4.0, "norm_z": 1.0, "spectrum_z": spec, "spectrum_r": spec}
  assert loop.collapse_alarm(healthy, ALARM) is None
  assert "RankMe of z 1.00 < 1.60 (0.2 of 8 dims)" in loop.collapse_alarm({**healthy, "rankme_z": 1.0}, ALARM)
  assert "norm of z 1e-07 < 0.0001" in loop.collapse_alarm({**healthy, "norm_z": 1e-7}, ALARM)
  assert loop.collapse_alarm({**healthy, "norm_z": float("nan")}, ALARM)      # NaN is never healthy
  assert loop.collapse_alarm({**healthy, "member": 3, "rankme_z": 0.5}, ALARM).startswith("member 3: ")
  assert loop.collapse_alarm({"step": 1, "loss": 1.0}, ALARM) is None          # not a diagnostics record


@pytest.mark.slow
def test_in_graph_rankme_equals_a_numpy_svd_of_the_same_embeddings():
  import jax
  from jaxssl import augment, state as state_lib, step as step_lib
  from _tiny import random_batch
  cfg = tiny_config("simclr")
  setup, state = state_lib.build(cfg, jax.random.PRNGKey(0))
  batch = jax.tree.map(jnp.asarray, random_batch(16))
  key = jax.random.PRNGKey(5)
  v1, _ = augment.make_views(key, batch["image"], setup.view_cfgs)
  o1, _ = state_lib.apply(setup, state.params, state.batch_stats, v1, train=True)
  _, metrics = jax.jit(step_lib.make_train_step(setup))(state, batch, key)
  for which in ("z", "r"):
    s = np.linalg.svd(np.asarray(o1[which], np.float64), compute_uv=False)
    p = s / s.sum() + 1e-7
    np.testing.assert_allclose(float(metrics[f"rankme_{which}"]), np.exp(-np.sum(p * np.log(p))), rtol=1e-4)


@pytest.mark.slow
@needs_fmnist
def test_collapsing_config_triggers_the_alarm_and_a_healthy_one_does_not(tmp_path, capsys):
  """BYOL's L2 loss with a large (AdamW) weight decay collapses z to a constant vector within a
  few steps (RankMe of z -> 1, norm -> 1e-2); SimCLR with the same budget keeps RankMe ~5 of 8."""
  alarm = {f"train.collapse_alarm.{k}": v for k, v in ALARM.items()}
  healthy = tiny_config("simclr", steps=20, batch_size=32, **{"train.log_every": 5, **alarm})
  run.train(healthy, str(tmp_path / "healthy"))
  recs = [json.loads(line) for line in open(tmp_path / "healthy" / "metrics.jsonl") if "rankme_z" in line]
  assert len(recs) == 4 and all(r["collapse_alarm"] == 0.0 for r in recs)
  assert min(r["rankme_z"] for r in recs) > 3.0
  assert "collapse alarm" not in capsys.readouterr().err

  collapsing = tiny_config("byol", steps=40, batch_size=32, **{
      "loss.kind": "l2", "optim.weight_decay": 900.0, "optim.schedule": "constant", "train.log_every": 5,
      **alarm, "train.collapse_alarm.policy": "stop"})
  with pytest.raises(NumericalError, match=r"collapse alarm at step (5|10|15|20): RankMe of z .* < 1\.60") as e:
    run.train(collapsing, str(tmp_path / "collapse"))
  step = int(str(e.value).split("at step ")[1].split(":")[0])
  assert "collapse alarm" in capsys.readouterr().err                     # visible on stderr
  recs = [json.loads(line) for line in open(tmp_path / "collapse" / "metrics.jsonl") if "rankme_z" in line]
  assert recs[-1]["step"] == step and recs[-1]["collapse_alarm"] == 1.0    # and in metrics.jsonl
  assert ckpt_lib.Checkpointer(str(tmp_path / "collapse" / "checkpoints")).latest_step() == step + 1
