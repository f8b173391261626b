"""config.data.crop_scale: the one knob of the views' random resized crop a recipe tunes."""
import dataclasses
import os

import pytest

import _tiny
from jaxssl import augment
from jaxssl import config as config_lib
from jaxssl import state as state_lib
from jaxssl.errors import ConfigError

SIMCLR = os.path.join(_tiny.CONFIG_DIR, "simclr.py") + ":fashion_mnist"
VICREG = os.path.join(_tiny.CONFIG_DIR, "vicreg.py") + ":fashion_mnist"   # a recipe that keeps the preset's


def test_simclr_recipe_sets_the_tuned_crop_on_both_views():
  # docs/figures/tuning/simclr_augment chose (0.4, 1) over the fmnist preset's (0.2, 1).
  views = augment.views_of_config(config_lib.load_config(SIMCLR))
  assert [v.crop_scale for v in views] == [(0.4, 1.0)] * 2
  assert views == tuple(dataclasses.replace(v, crop_scale=(0.4, 1.0)) for v in augment.preset("fmnist", 28))


def test_default_keeps_the_preset_and_the_saved_config():
  cfg = config_lib.load_config(VICREG)
  assert cfg.data.crop_scale is None
  assert augment.views_of_config(cfg) == augment.preset("fmnist", 28)
  # A default run's config.json (and so every cached evaluation keyed on it) is unchanged.
  assert "crop_scale" not in config_lib.to_json(cfg)


def test_override_reaches_both_views_of_the_run_and_nothing_else():
  cfg = _tiny.tiny_config("simclr", **{"data.crop_scale": (0.35, 0.9)})
  setup, _ = state_lib.build(cfg, 0)
  expected = tuple(dataclasses.replace(v, crop_scale=(0.35, 0.9)) for v in augment.preset("fmnist", 28))
  assert setup.view_cfgs == expected
  again = config_lib.from_json(config_lib.to_json(cfg))
  assert tuple(again.data.crop_scale) == (0.35, 0.9)
  assert augment.views_of_config(again) == expected


def test_command_line_override_parses_a_tuple():
  cfg = config_lib.load_config(SIMCLR, ["data.crop_scale=(0.3,1.0)"])
  assert augment.views_of_config(cfg)[1].crop_scale == (0.3, 1.0)


@pytest.mark.parametrize("bad", ["(0.5,0.2)", "0.3", "(0,1)", "(0.2,1.5)", "'wide'", "(True,1.0)"])
def test_bad_crop_scale_names_the_field(bad):
  # simclr's recipe holds a tuple, so a scalar or a word is already refused by the override's
  # type check; vicreg's holds None, so every bad value reaches the range check.
  with pytest.raises(ConfigError, match=r"config\.data\.crop_scale (must be None|expects tuple)"):
    config_lib.load_config(SIMCLR, [f"data.crop_scale={bad}"])
  with pytest.raises(ConfigError, match=r"config\.data\.crop_scale must be None"):
    config_lib.load_config(VICREG, [f"data.crop_scale={bad}"])
