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
