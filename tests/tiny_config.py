"""A config file for subprocess tests: `--config tests/tiny_config.py:simclr`."""
import _tiny


def get_config(method: str = "simclr"):
  return _tiny.tiny_config(method)
