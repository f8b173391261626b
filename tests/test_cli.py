"""The command line: `jaxssl config` prints every field of the resolved config with a description."""
import os

import pytest

from jaxssl import cli
from jaxssl import config as config_lib

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "experiments", "configs")


@pytest.mark.parametrize("method", ["simclr", "byol", "isoloss", "dclw"])
def test_config_command_lists_every_field_with_value_and_description(method, capsys):
  path = os.path.join(CONFIGS, f"{method}.py")
  assert cli.main(["config", "--config", path, "--config.train.num_steps=300"]) == 0
  out = capsys.readouterr().out.splitlines()
  by_field = {line.split()[0]: line for line in out}
  cfg = config_lib.load_config(path, ["--config.train.num_steps=300"])
  leaves = {}

  def walk(node, prefix):
    for k, v in node.items():
      if hasattr(v, "items") and f"{prefix}{k}" not in config_lib.FIELD_DOCS and prefix + k != "model.projector":
        walk(v, f"{prefix}{k}.")
      else:
        leaves[f"{prefix}{k}"] = v
  walk(cfg, "")
  for field in leaves:
    assert field in by_field, f"jaxssl config does not list {field}"
    assert "#" in by_field[field] and by_field[field].split("#", 1)[1].strip(), f"{field} has no description"
  assert "300" in by_field["train.num_steps"]             # the override is resolved


def test_config_command_refuses_a_bad_override(capsys):
  code = cli.main(["config", "--config", os.path.join(CONFIGS, "simclr.py"), "--config.loss.temprature=0.2"])
  assert code == 2 and "did you mean config.loss.temperature" in capsys.readouterr().err


def test_end_of_run_summary_names_loss_ranks_and_files(tmp_path):

  (tmp_path / "checkpoints").mkdir()
  (tmp_path / "metrics.jsonl").write_text("{}\n")
  text = cli.end_of_run_summary({"step": 300, "last": {"loss": 4.123456, "effective_rank_z": 95.24,
                                                        "effective_rank_r": 120.0, "spectrum_z": [1.0]}},
                                str(tmp_path))
  assert text == (f"finished: step 300, loss 4.1235, effective_rank_z 95.2, effective_rank_r 120.0. "
                  f"Written in {tmp_path}: checkpoints, metrics.jsonl.")
  stopped = cli.end_of_run_summary({"step": 4, "last": [{"loss": 1.0}], "interrupted": "SIGTERM"}, str(tmp_path))
  assert stopped.startswith("finished (stopped by SIGTERM): step 4, loss 1.0000.")


def test_overriding_num_steps_rescales_the_fields_derived_from_it():
  path = os.path.join(CONFIGS, "simclr.py")
  recipe = config_lib.load_config(path)
  short = config_lib.load_config(path, [f"--config.train.num_steps={recipe.train.num_steps // 10}"])
  for field, value in (("log_every", recipe.train.log_every), ("checkpoint_every", recipe.train.checkpoint_every)):
    assert short.train[field] == max(1, round(value / 10)), field
  assert short.optim.warmup_steps == round(recipe.optim.warmup_steps / 10)
  # An explicit value wins; without a num_steps override nothing moves.
  explicit = config_lib.load_config(path, [f"--config.train.num_steps={recipe.train.num_steps // 10}",
                                           "--config.train.log_every=7"])
  assert explicit.train.log_every == 7 and explicit.train.checkpoint_every == short.train.checkpoint_every
  same = config_lib.load_config(path, ["--config.optim.lr=0.002"])
  assert (same.train.log_every, same.optim.warmup_steps) == (recipe.train.log_every, recipe.optim.warmup_steps)
