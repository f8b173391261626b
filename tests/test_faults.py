"""Reliability: pre-emption, exact resume, kill -9, corrupt checkpoints, numerical faults,
multi-host, and every row of docs/errors.md (bad input -> the documented message)."""
import gzip
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings

import jax
import numpy as np
import pytest

from jaxssl import checkpoint as ckpt_lib
from jaxssl import config as config_lib
from jaxssl import data as data_lib
from jaxssl import evaluate, losses, parallel, run, supervise
from jaxssl import export as export_lib
from jaxssl import state as state_lib
from jaxssl.data import tfds_source
from jaxssl import step as step_lib
from jaxssl.errors import CheckpointError, ConfigError, DataError, NumericalError
from _tiny import random_batch, tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST_DIR = "/usr/share/datasets/fashion-mnist"
needs_fmnist = pytest.mark.skipif(not os.path.exists(os.path.join(FMNIST_DIR, "train-images-idx3-ubyte.gz")),
                                  reason="dataset-fashion-mnist not installed")


def _leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state))]


def _assert_bitwise(a, b):
  la, lb = _leaves(a), _leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    assert x.dtype == y.dtype and x.shape == y.shape
    np.testing.assert_array_equal(x, y)


def _restore(workdir, cfg):
  _, state = state_lib.build(cfg, jax.random.PRNGKey(cfg.seed))
  ck = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"))
  return ck.restore(ck.latest_step(), state)


class _SignalAt:
  """A BatchIterator that sends `signum` to this process when batch `at` is fetched."""

  def __init__(self, monkeypatch, at, signum=signal.SIGTERM):
    real = data_lib.BatchIterator
    outer = self
    self.fired = False

    class It(real):
      def __next__(self):
        if self.step == at and not outer.fired:
          outer.fired = True
          os.kill(os.getpid(), signum)
        return super().__next__()
    monkeypatch.setattr(data_lib, "BatchIterator", It)


# --------------------------------------------------------------------------- pre-emption / resume

@needs_fmnist
@pytest.mark.parametrize("signum", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)])
def test_signal_checkpoints_and_resume_is_bitwise_identical(tmp_path, monkeypatch, capsys, signum):
  cfg = tiny_config("byol", steps=6, **{"train.checkpoint_every": 4})
  ref = run.train(cfg, str(tmp_path / "ref"))
  with monkeypatch.context() as m:
    _SignalAt(m, at=3, signum=signum)
    out = run.train(cfg, str(tmp_path / "run"))
  assert out["interrupted"] == signal.Signals(signum).name and out["step"] == 4
  assert "received: stopped after step 4" in capsys.readouterr().out
  ck = ckpt_lib.Checkpointer(str(tmp_path / "run" / "checkpoints"))
  assert ck.all_steps() == [4]
  assert ck.read_meta(4)["data_position"] == 4
  resumed = run.train(cfg, str(tmp_path / "run"), resume=True)
  assert resumed["step"] == 6
  _assert_bitwise(resumed["state"], ref["state"])
  # metrics.jsonl has each logged step exactly once after the resume
  steps = [json.loads(l)["step"] for l in open(tmp_path / "run" / "metrics.jsonl")]
  assert steps == sorted(set(steps))


@needs_fmnist
def test_sequential_sweep_signal_and_resume_is_bitwise_identical_with_stacked_checkpoints(tmp_path, monkeypatch):
  """A sweep in the sequential member mode (K single-run states) checkpoints the stacked
  layout of the one-program mode, and resumes bit for bit."""
  from jaxssl import sweep
  cfg = tiny_config("simclr", steps=6, **{"train.checkpoint_every": 4, "mesh.member_mode": "sequential"})
  members = [{"loss.temperature": 0.1}, {"loss.temperature": 0.5}]
  ref = run.train(cfg, str(tmp_path / "ref"), members=members)
  with monkeypatch.context() as m:
    _SignalAt(m, at=3)
    out = run.train(cfg, str(tmp_path / "run"), members=members)
  assert out["interrupted"] == "SIGTERM" and out["step"] == 4
  # The checkpoint holds the stacked state (leading member axis), as the one program writes it.
  _, single = state_lib.build(cfg, jax.random.PRNGKey(cfg.seed))
  template = sweep.stack_members(cfg, single, members)
  restored, meta = ckpt_lib.Checkpointer(str(tmp_path / "run" / "checkpoints")).restore(4, template)
  assert meta["step"] == 4 and int(restored.step) == 4
  assert jax.tree.leaves(restored.params)[0].shape[0] == 2
  resumed = run.train(cfg, str(tmp_path / "run"), members=members, resume=True)
  assert resumed["step"] == 6
  _assert_bitwise(resumed["state"], ref["state"])


@pytest.mark.slow
@needs_fmnist
def test_corrupt_latest_checkpoint_falls_back_with_warning_and_stays_exact(tmp_path):
  cfg = tiny_config("simclr", steps=4, **{"train.checkpoint_every": 2})
  ref = run.train(cfg, str(tmp_path / "ref"))
  wd = tmp_path / "run"
  run.train(cfg, str(wd))
  # Corrupt step 4: truncate every file of its state item.
  for root, _, files in os.walk(wd / "checkpoints" / "4" / "state"):
    for f in files:
      open(os.path.join(root, f), "wb").close()
  with pytest.warns(RuntimeWarning, match="unreadable"):
    out = run.train(cfg, str(wd), resume=True)
  assert out["step"] == 4
  assert os.path.isdir(wd / "checkpoints" / "4.corrupt")
  _assert_bitwise(out["state"], ref["state"])
  # All checkpoints unreadable: a clear error, never a silent restart at step 0.
  for step in ("2", "4"):
    for root, _, files in os.walk(wd / "checkpoints" / step / "state"):
      for f in files:
        open(os.path.join(root, f), "wb").close()
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
      run.train(cfg, str(wd), resume=True)


def _cli(*args, env=None):
  return [sys.executable, "-m", "jaxssl.cli", *args]


def _env(**extra):
  env = dict(os.environ)
  env.update({k: str(v) for k, v in extra.items()})
  return env


@pytest.mark.slow
@needs_fmnist
def test_kill_9_then_resume_matches_uninterrupted_run(tmp_path):
  steps = 300
  overrides = [f"--config.train.num_steps={steps}", "--config.train.checkpoint_every=20", "--config.optim.warmup_steps=1",
               "--config.train.log_every=50"]
  wd = tmp_path / "run"
  cmd = _cli("train", "--config", os.path.join(REPO, "tests", "tiny_config.py:simclr"), *overrides,
             "--workdir", str(wd), "--no-eval")
  proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  ck_dir = wd / "checkpoints"
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if ck_dir.is_dir() and any(d.isdigit() for d in os.listdir(ck_dir)):
      break
    time.sleep(0.05)
  time.sleep(random.Random(os.getpid()).uniform(0.0, 0.3))   # a random moment mid-run
  proc.kill()                                                  # SIGKILL: no handler runs
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, proc.stdout.read().decode()[-2000:]
  done = ckpt_lib.Checkpointer(str(ck_dir)).all_steps()
  assert done and done[-1] < steps, done
  res = subprocess.run(cmd + ["--resume"], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
  assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
  assert f"resumed from step {done[-1]}" in res.stdout
  cfg = tiny_config("simclr", **{"train.num_steps": steps, "train.checkpoint_every": 20,
                                 "train.log_every": 50})
  ref = run.train(cfg, str(tmp_path / "ref"))
  resumed, meta = _restore(str(wd), cfg)
  assert meta["step"] == steps
  _assert_bitwise(resumed, ref["state"])


# --------------------------------------------------------------------------- numerical faults

@needs_fmnist
def test_nan_stops_with_step_and_metric_and_keeps_last_good_checkpoint(tmp_path):
  cfg = tiny_config("simclr", steps=6, **{"optim.name": "sgd", "optim.lr": 1e36,
                                          "train.checkpoint_every": 1})
  with pytest.raises(NumericalError, match=r"non-finite (loss|gradient) at step \d+") as e:
    run.train(cfg, str(tmp_path))
  bad_step = int(str(e.value).split("at step ")[1].split()[0])
  assert 0 < bad_step < 6
  ck = ckpt_lib.Checkpointer(str(tmp_path / "checkpoints"))
  assert ck.latest_step() == bad_step        # the state *before* the bad step
  state, _ = _restore(str(tmp_path), cfg)
  assert all(np.isfinite(x).all() for x in _leaves(state.params))


@needs_fmnist
def test_nan_skip_policy_keeps_state_finite(tmp_path):
  cfg = tiny_config("simclr", steps=6, **{"optim.name": "sgd", "optim.lr": 1e36,
                                          "train.nonfinite_policy": "skip"})
  out = run.train(cfg, str(tmp_path))
  recs = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert any(not r["loss_finite"] or not r["grad_finite"] for r in recs)
  assert all(np.isfinite(x).all() for x in _leaves(out["state"].params))


@needs_fmnist
def test_nan_rollback_policy_restores_and_lowers_lr(tmp_path, capsys):
  """lr=1e36 explodes the parameters at step 1 (finite, huge); the loss turns non-finite at
  step 2. The checkpoint at step 2 already holds the exploded parameters, so a second
  consecutive failure must go one checkpoint further back (step 1), with the lr lowered
  again: 1e36 -> 1e18 -> 1."""
  cfg = tiny_config("simclr", steps=6, **{"optim.name": "sgd", "optim.lr": 1e36,
                                          "train.checkpoint_every": 1, "train.nonfinite_policy": "rollback",
                                          "train.rollback_lr_factor": 1e-18})
  out = run.train(cfg, str(tmp_path))
  assert out["step"] == 6
  lines = [l for l in capsys.readouterr().out.splitlines() if "rolled back to step" in l]
  targets = [int(l.split("rolled back to step ")[1].split(",")[0]) for l in lines]
  assert len(targets) >= 2 and targets[1] < targets[0]        # escalated to an older checkpoint
  np.testing.assert_allclose(float(out["state"].hparams["lr"]), 1e36 * 1e-18 ** len(targets), rtol=1e-5)
  assert all(np.isfinite(x).all() for x in _leaves(out["state"].params))


@needs_fmnist
def test_nan_rollback_policy_gives_up_after_max_rollbacks(tmp_path):
  # A factor of 0.9 never brings lr=1e36 back to a trainable value: stop with a clear error.
  cfg = tiny_config("simclr", steps=6, **{"optim.name": "sgd", "optim.lr": 1e36,
                                          "train.checkpoint_every": 1, "train.nonfinite_policy": "rollback",
                                          "train.rollback_lr_factor": 0.9, "train.max_rollbacks": 2})
  with pytest.raises(NumericalError, match=r"after \d+ rollback\(s\)"):
    run.train(cfg, str(tmp_path))


# --------------------------------------------------------------------------- multi-host

def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.slow
@needs_fmnist
def test_two_processes_match_one_process(tmp_path):
  """2 processes x 4 CPU devices (localhost coordinator, gloo) == 1 process x 8 devices."""
  port = _free_port()
  # SGD: Adam turns round-off in exactly-zero gradients (a bias before BN) into +-lr.
  overrides = ["--config.train.num_steps=3", "--config.train.checkpoint_every=3", "--config.optim.name=sgd",
               "--config.optim.lr=0.1"]
  env = _env(XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
  procs = []
  for pid in range(2):
    cmd = _cli("train", "--config", os.path.join(REPO, "tests", "tiny_config.py:byol"), *overrides,
               "--workdir", str(tmp_path / "mh"), "--no-eval", "--coordinator", f"localhost:{port}",
               "--num-processes", "2", "--process-id", str(pid))
    procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True))
  outs = [p.communicate(timeout=600)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)
  cfg = tiny_config("byol", **{"train.num_steps": 3, "train.checkpoint_every": 3, "optim.name": "sgd",
                               "optim.lr": 0.1})
  ref = run.train(cfg, str(tmp_path / "single"))      # 1 process, 8 devices, same global batch
  state, meta = _restore(str(tmp_path / "mh"), cfg)
  assert meta["step"] == 3
  for a, b in zip(_leaves(state.params), _leaves(ref["state"].params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@needs_fmnist
@pytest.mark.slow
@pytest.mark.parametrize("victim", [0, 1])
def test_killed_process_survivor_exits_with_message(tmp_path, victim):
  """kill -9 one of two processes: the other exits within 30 s naming it, and --resume continues."""
  port = _free_port()
  workdir = str(tmp_path / "mh")
  env = _env(XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")

  def launch(pid, steps, *extra):
    cmd = _cli("train", "--config", os.path.join(REPO, "tests", "tiny_config.py:simclr"),
               f"--config.train.num_steps={steps}", "--config.train.checkpoint_every=2", "--workdir", workdir,
               "--no-eval", "--coordinator", f"localhost:{port}", "--num-processes", "2", "--process-id", str(pid),
               *extra)
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

  procs = [launch(pid, 100000) for pid in range(2)]
  deadline = time.time() + 300
  while not os.path.isdir(os.path.join(workdir, "checkpoints", "2")) and time.time() < deadline:
    assert all(p.poll() is None for p in procs), [p.communicate()[0][-3000:] for p in procs]
    time.sleep(0.2)
  procs[victim].kill()
  killed_at = time.time()
  survivor = procs[1 - victim]
  out = survivor.communicate(timeout=60)[0]
  elapsed = time.time() - killed_at
  procs[victim].wait()
  assert survivor.returncode == parallel.PEER_FAILURE_EXIT_CODE, out[-3000:]
  assert elapsed < 30, elapsed
  assert f"lost contact with process {victim} of 2" in out and "--resume" in out, out[-3000:]
  assert "Traceback" not in out and " @     0x" not in out, out[-3000:]
  if victim == 1:   # the run continues from the intact checkpoint on both processes
    port = _free_port()
    resumed = [launch(pid, 4, "--resume") for pid in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in resumed]
    assert [p.returncode for p in resumed] == [0, 0], "\n".join(o[-3000:] for o in outs)
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "4"))


def test_lost_process_parsed_from_coordination_errors():
  heartbeat = ("UNAVAILABLE: The following tasks are unhealthy (stopped sending heartbeats):\n3\n"
               "The tasks have crashed.")
  leader = "UNAVAILABLE: Failed to send RPC to coordination service. Either the leader task was preempted"
  assert supervise.lost_from_coordination_error(heartbeat) == [3]
  assert supervise.lost_from_coordination_error(leader) == [0]
  assert supervise.lost_from_coordination_error("something else") is None


def test_initialize_distributed_needs_all_three_settings(monkeypatch):
  for k in ("JAXSSL_COORDINATOR", "JAXSSL_NUM_PROCESSES", "JAXSSL_PROCESS_ID"):
    monkeypatch.delenv(k, raising=False)
  with pytest.raises(ConfigError, match="coordinator address, number of processes and process id"):
    parallel.initialize_distributed("localhost:1234", None, None)
  with pytest.raises(ConfigError, match=r"process_id=3 must be in \[0, 2\)"):
    parallel.initialize_distributed("localhost:1234", 2, 3)
  assert parallel.initialize_distributed() is False     # single machine: nothing to do


# --------------------------------------------------------------------------- docs/errors.md rows

def _load(*overrides):
  return config_lib.load_config(os.path.join(REPO, "experiments", "configs", "simclr.py"), list(overrides))


def test_error_unknown_method():
  with pytest.raises(ConfigError, match="unknown method 'simclrr'; known methods: .*simclr"):
    _load("--config.method=simclrr")


def test_error_unknown_loss():
  with pytest.raises(ConfigError, match="unknown loss 'ntxent'; known losses: .*nt_xent"):
    losses.get_loss("ntxent")


def test_error_unknown_kernel():
  with pytest.raises(ConfigError, match="config.loss.kernel must be one of 'gaussian', .*, got 'rbf'"):
    config_lib.load_config(os.path.join(REPO, "experiments", "configs", "kcl.py"), ["--config.loss.kernel=rbf"])


@pytest.mark.parametrize("tau", ["0", "-0.5"])
def test_error_nonpositive_temperature(tau):
  with pytest.raises(ConfigError, match=r"config.loss.temperature must be > 0"):
    _load(f"--config.loss.temperature={tau}")
  import jax.numpy as jnp
  with pytest.raises(ConfigError, match="temperature"):
    losses.nt_xent(jnp.ones((4, 3)), jnp.ones((4, 3)), temperature=float(tau))


def test_error_batch_not_divisible_by_devices():
  mesh = parallel.make_mesh(8)
  with pytest.raises(ConfigError, match="batch_size=12 is not divisible by the 8 devices.*e.g. 8 or 16"):
    parallel.check_batch_divisible(12, mesh)


def test_error_missing_dataset(tmp_path):
  with pytest.raises(DataError, match="IDX"):
    data_lib.prepare_fashion_mnist(idx_dir=str(tmp_path / "nowhere"), data_dir=str(tmp_path / "tfds"))


@needs_fmnist
def test_error_corrupt_dataset(tmp_path):
  idx = tmp_path / "idx"
  shutil.copytree(FMNIST_DIR, idx)
  with gzip.open(idx / "t10k-labels-idx1-ubyte.gz", "wb") as f:
    f.write(b"\x00\x00\x08\x01" + (10000).to_bytes(4, "big") + b"\x01" * 100)   # truncated
  with pytest.raises(DataError, match="t10k-labels"):
    data_lib.prepare_fashion_mnist(idx_dir=str(idx), data_dir=str(tmp_path / "tfds"))


def test_error_image_shape_mismatch():
  cfg = tiny_config("simclr")
  cfg.model.encoder_kwargs = {"widths": (4, 8), "strides": (2, 2), "in_channels": 3}
  with pytest.raises(ConfigError, match="in_channels=3 but dataset 'fashion_mnist' has 1-channel images"):
    state_lib.build(cfg)
  setup, state = state_lib.build(tiny_config("simclr"))
  with pytest.raises(DataError, match="built for in_channels=1 but got images of shape"):
    jax.jit(step_lib.make_train_step(setup))(state, random_batch(16, shape=(32, 32, 3)), jax.random.PRNGKey(0))


def test_error_labels_out_of_range():
  with pytest.raises(DataError, match=r"label 10 at index 2 is outside \[0, 10\)"):
    data_lib.check_labels(np.array([0, 9, 10, -1]), 10, "x")
  x = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
  y = np.arange(20) % 3
  with pytest.raises(DataError, match="labels must lie in"):
    evaluate.linear_probe(x, y + 1, x, y, num_classes=3)


def test_error_resume_nonexistent_workdir(tmp_path):
  with pytest.raises(ConfigError, match="--resume given but workdir .* does not exist"):
    run.train(tiny_config("simclr"), str(tmp_path / "missing"), resume=True)


def test_error_unknown_override_field_and_wrong_type():
  with pytest.raises(ConfigError, match=r"unknown config field 'config.loss.temprature'; did you mean config.loss.temperature"):
    _load("--config.loss.temprature=0.2")
  with pytest.raises(ConfigError, match="config.data.batch_size"):
    _load("--config.data.batch_size=abc")


def test_error_checkpoint_from_a_different_model(tmp_path):
  cfg = tiny_config("simclr")
  _, state = state_lib.build(cfg)
  ck = ckpt_lib.Checkpointer(str(tmp_path), fingerprint=ckpt_lib.fingerprint(cfg, state))
  ck.save(1, state, {"step": 1})
  ck.wait()
  other = tiny_config("simclr", **{"model.projector.out_dim": 16})
  _, other_state = state_lib.build(other)
  ck2 = ckpt_lib.Checkpointer(str(tmp_path), fingerprint=ckpt_lib.fingerprint(other, other_state))
  with pytest.raises(CheckpointError, match="belongs to a different model.*projector"):
    ck2.restore_latest(other_state)


def test_error_workdir_with_checkpoints_needs_resume(tmp_path):
  cfg = tiny_config("simclr")
  _, state = state_lib.build(cfg)
  ck = ckpt_lib.Checkpointer(str(tmp_path / "checkpoints"), fingerprint=ckpt_lib.fingerprint(cfg, state))
  ck.save(1, state, {"step": 1})
  ck.wait()
  with pytest.raises(ConfigError, match="already has checkpoints"):
    run.train(cfg, str(tmp_path))


def test_errors_md_lists_every_tested_row():
  text = open(os.path.join(REPO, "docs", "errors.md")).read()
  for name in [n for n in globals() if n.startswith("test_error_")]:
    assert f"`{name}`" in text, f"docs/errors.md has no row for {name}"


# --------------------------------------------------------------------------- edges (refused before compiling)

def _main(capsys, *argv):
  from jaxssl import cli
  code = cli.main(list(argv))
  return code, capsys.readouterr().err


def test_error_unknown_config_variant(capsys, tmp_path):
  code, err = _main(capsys, "train", "--config", os.path.join(REPO, "experiments/configs/simclr.py:mnist"),
                   "--workdir", str(tmp_path / "w"))
  assert code == 2 and "unknown dataset 'mnist'" in err and "cifar10" in err and "Traceback" not in err


def test_error_config_file_syntax_error(capsys, tmp_path):
  bad = tmp_path / "bad.py"
  bad.write_text("def get_config(:\n  pass\n")
  code, err = _main(capsys, "train", "--config", str(bad), "--workdir", str(tmp_path / "w"))
  assert code == 2 and "syntax error at line 1" in err and str(bad) in err


@pytest.mark.parametrize("override,field", [
    ("train.keep_checkpoints=-1", "train.keep_checkpoints"), ("train.keep_checkpoints=0", "train.keep_checkpoints"),
    ("optim.warmup_steps=-5", "optim.warmup_steps"), ("train.max_rollbacks=-1", "train.max_rollbacks"),
    ("data.image_size=0", "data.image_size"), ("optim.schedule=linear", "optim.schedule"),
    ("eval.knn_k=(0,)", "eval.knn_k"), ("eval.probe_epochs=0", "eval.probe_epochs"),
    ("eval.batch_size=0", "eval.batch_size")])
def test_error_out_of_range_counts_and_names(override, field):
  with pytest.raises(ConfigError, match=f"config.{field}"):
    config_lib.load_config(os.path.join(REPO, "experiments", "configs", "simclr.py"), ["--config." + override])


def test_error_workdir_is_a_file_or_read_only(tmp_path, monkeypatch):
  f = tmp_path / "a_file"
  f.write_text("x")
  with pytest.raises(ConfigError, match="is an existing file, not a directory"):
    run.train(tiny_config("simclr"), str(f))

  def read_only(path, *a, **k):
    raise OSError(30, "Read-only file system", path)
  monkeypatch.setattr(run, "open", read_only, raising=False)
  with pytest.raises(ConfigError, match="is not writable \\(Read-only file system\\)"):
    run.train(tiny_config("simclr"), str(tmp_path / "ro"))


def test_error_process_count_not_an_integer(monkeypatch):
  monkeypatch.setenv("JAXSSL_NUM_PROCESSES", "two")
  with pytest.raises(ConfigError, match="JAXSSL_NUM_PROCESSES='two' must be an integer"):
    parallel.initialize_distributed()
  monkeypatch.delenv("JAXSSL_NUM_PROCESSES")
  monkeypatch.setenv("JAXSSL_PROCESS_ID", "x")
  with pytest.raises(ConfigError, match="JAXSSL_PROCESS_ID='x' must be an integer"):
    parallel.initialize_distributed()


def test_error_plot_without_a_run(capsys, tmp_path):
  code, err = _main(capsys, "plot", "--workdir", str(tmp_path / "nosuch"))
  assert code == 2 and "has no metrics.jsonl to plot" in err


def test_error_eval_or_resume_of_a_sweep_directory(tmp_path):
  (tmp_path / "members.json").write_text(json.dumps([{"optim.lr": 1e-3}, {"optim.lr": 2e-3}]))
  (tmp_path / "config.json").write_text(config_lib.to_json(tiny_config("simclr")))
  with pytest.raises(ConfigError, match=r"is a sweep directory; evaluate one member at a time.*members/<i>"):
    export_lib.load_run(str(tmp_path))
  from jaxssl import sweep
  with pytest.raises(ConfigError, match=r"started with \[\{'optim.lr': 0.001\}"):
    sweep.check_resume_members(str(tmp_path), [{"optim.lr": 5e-3}, {"optim.lr": 6e-3}])
  sweep.check_resume_members(str(tmp_path), [{"optim.lr": 1e-3}, {"optim.lr": 2e-3}])   # the same: fine
  with pytest.raises(ConfigError, match="is a sweep directory; resume it with `jaxssl sweep --resume`"):
    sweep.check_resume_members(str(tmp_path), None)


def test_interrupt_outside_a_step_exits_130_with_a_message(capsys, monkeypatch, tmp_path):
  def interrupted(*a, **k):
    raise KeyboardInterrupt
  monkeypatch.setattr(run, "train", interrupted)
  code, err = _main(capsys, "train", "--config", os.path.join(REPO, "experiments/configs/simclr.py"),
                   "--workdir", str(tmp_path))
  assert code == 130 and "continue with --resume" in err and "Traceback" not in err


def test_checkpoint_disk_full_is_one_clear_error(tmp_path, monkeypatch):
  import errno as errno_lib
  _, state = state_lib.build(tiny_config("simclr"))
  ck = ckpt_lib.Checkpointer(str(tmp_path / "checkpoints"))
  ck.save(1, state, {"step": 1})

  def full(*a, **k):
    raise OSError(errno_lib.ENOSPC, "No space left on device")
  monkeypatch.setattr(ck._mngr, "save", full)
  with pytest.raises(CheckpointError, match=r"disk full while writing checkpoint 2 .* MiB free.*--resume: it "
                                            r"continues from step 1"):
    ck.save(2, state, {"step": 2})
  assert ck.all_steps() == [1]    # what was written before is intact and resumable


# --------------------------------------------------------------------------- edges (need a short run)

@needs_fmnist
@pytest.mark.slow
def test_resume_refuses_changes_it_cannot_honour_and_records_what_runs(tmp_path):
  cfg = tiny_config("simclr", steps=2)
  wd = str(tmp_path / "run")
  run.train(cfg, wd)
  for field, value in (("optim.lr", 0.5), ("data.batch_size", 32)):
    changed = tiny_config("simclr", steps=4, **{field: value})
    with pytest.raises(ConfigError, match=f"--resume would change 1 field.*config.{field}"):
      run.train(changed, wd, resume=True)
  longer = tiny_config("simclr", steps=4)     # extending a run is allowed
  out = run.train(longer, wd, resume=True)
  assert out["step"] == 4
  assert json.load(open(os.path.join(wd, "config.json")))["train"]["num_steps"] == 4


@pytest.mark.slow
@needs_fmnist
def test_second_writer_is_refused_and_the_first_keeps_its_data(tmp_path):
  wd = str(tmp_path / "run")
  run.train(tiny_config("simclr", steps=2), wd)
  before = open(os.path.join(wd, "metrics.jsonl")).read()
  with run.workdir_lock(wd):        # a first writer holds the workdir
    with pytest.raises(ConfigError, match=f"in use by another jaxssl run \\(PID {os.getpid()}\\)"):
      run.train(tiny_config("simclr", steps=4), wd, resume=True)
  assert open(os.path.join(wd, "metrics.jsonl")).read() == before
  assert run.train(tiny_config("simclr", steps=4), wd, resume=True)["step"] == 4   # released on exit


@needs_fmnist
def test_overflowing_gradient_norm_stops_the_run(tmp_path):
  """temperature=1e-30: a finite loss of ~1e29 with an infinite gradient norm is not finite."""
  cfg = tiny_config("simclr", steps=3, **{"loss.temperature": 1e-30})
  with pytest.raises(NumericalError, match=r"non-finite (loss|gradient) at step 0.*grad_norm="):
    run.train(cfg, str(tmp_path))


@pytest.mark.slow
@needs_fmnist
def test_eval_at_end_is_read_from_the_config(tmp_path):
  """The CLI used to evaluate unless --no-eval, whatever config.eval.at_end said."""
  from jaxssl import cli
  fast = {"eval.probe_epochs": 1, "eval.baselines": False}
  for at_end in (True, False):
    cfg = tiny_config("simclr", steps=2, **{"eval.at_end": at_end, **fast})
    cfg_file = tmp_path / f"cfg_{at_end}.py"
    cfg_file.write_text("import json\nimport ml_collections\n\n\ndef get_config():\n"
                        f"  return ml_collections.ConfigDict(json.loads({config_lib.to_json(cfg)!r}))\n")
    wd = tmp_path / f"run_{at_end}"
    assert cli.main(["train", "--config", str(cfg_file), "--workdir", str(wd)]) == 0
    assert os.path.exists(wd / "eval.json") == at_end


def test_tfds_dataset_offline_fails_fast_and_leaves_nothing(tmp_path, monkeypatch):
  pytest.importorskip("tensorflow_datasets")
  monkeypatch.setattr(tfds_source, "can_download", lambda: False)   # CI may have internet to registries
  data_dir = str(tmp_path / "tensorflow_datasets")
  t0 = time.time()
  with pytest.raises(DataError, match=r"'cifar10' is not prepared in .*tensorflow_datasets and this machine is "
                                      r"offline.*tfds build cifar10 --data_dir DIR"):
    tfds_source.prepare_builder("cifar10", data_dir)
  assert time.time() - t0 < 30
  assert not os.path.exists(data_dir), list(os.walk(data_dir))


def test_download_probe_says_offline_without_network(monkeypatch):

  def refuse(*a, **k):
    raise OSError("network unreachable")
  monkeypatch.setattr(tfds_source.socket, "create_connection", refuse)
  assert tfds_source.can_download() is False


@pytest.mark.slow
@needs_fmnist
def test_two_sigints_20ms_apart_leave_a_clean_resumable_workdir(tmp_path):
  workdir = tmp_path / "run"
  cmd = _cli("train", "--config", os.path.join(REPO, "tests", "tiny_config.py:simclr"),
             "--config.train.num_steps=100000", "--config.train.checkpoint_every=3", "--workdir", str(workdir),
             "--no-eval")
  proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 300
  while not os.path.isdir(workdir / "checkpoints" / "3") and time.time() < deadline and proc.poll() is None:
    time.sleep(0.1)
  proc.send_signal(signal.SIGINT)
  time.sleep(0.02)
  proc.send_signal(signal.SIGINT)
  out = proc.communicate(timeout=120)[0]
  assert proc.returncode in (0, 130), out[-3000:]
  for bad in ("Traceback", "cannot schedule new futures", "Event loop is closed"):
    assert bad not in out, out[-3000:]
  assert "--resume" in out, out[-3000:]
  leftovers = [d for d in os.listdir(workdir / "checkpoints") if "tmp" in d]
  assert not leftovers, leftovers
  steps = ckpt_lib.Checkpointer(str(workdir / "checkpoints")).all_steps()
  assert steps and min(steps) >= 3
  resumed = run.train(tiny_config("simclr", steps=max(steps) + 1), str(workdir), resume=True,
                      evaluate_at_end=False)
  assert resumed["step"] == max(steps) + 1
