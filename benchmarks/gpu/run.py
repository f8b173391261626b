"""The GPU benchmark driver: every accelerator measurement of jaxssl in one call.

    bash benchmarks/gpu/run.sh [--dry-run] [OUT_DIR] [--stages a,b] [--train-seconds 240]

runs the stages below one after the other, each in its own Python process with a time
limit (`stages.py` holds the measurements), and writes to OUT_DIR (default $OUT):

  results.json  every field of `FIELDS`, always all of them: a stage that failed, timed
                out or was skipped still has its keys (null), with its status and error;
  summary.txt   a short text summary, with the issue's goals and whether they are met;
  log.txt       everything the stages printed.

Stages (README.md says what each one measures):

  devices            jax.devices(), versions, the bf16 matmul peak (8192^3 on the GPU)
  train_step         SimCLR ResNet-18 (CIFAR stem) step, bf16 and f32: jaxssl vs PyTorch
                     eager vs torch.compile; img/s, ratios, MFU
  sweep              K = 8 vmapped members vs 8 sequential runs (small ConvNet, ResNet-18)
  spectrum_overhead  the step with the in-graph diagnostics every step / never / every 100
  sharded            sharded vs unsharded diagnostics and NT-Xent on the available devices
  real_run           Fashion-MNIST main job for a wall-clock budget, then probe and kNN

Time: the whole run is kept under `--total-seconds` (470 s on the GPU: the device tool's
8-minute target). Each stage has a cap (`STAGE_CAPS`); the real run gets what is left,
and trains for min(--train-seconds, what is left minus its fixed costs) seconds: the
budget it actually had is recorded (`stages.real_run.train_seconds_budget`).

`--dry-run` runs every stage at tiny sizes on the CPU (JAX_PLATFORMS=cpu), in 2.5 to 3
minutes on the 2-core VM, with the same JSON fields. The exit status is 0 when every
stage is "ok". `--prepare-carry` makes benchmarks/gpu/carry/ (ml_collections and the
Fashion-MNIST IDX files) for the device call: README.md gives the call.

This module imports only the standard library at module level, so that tests can read
`FIELDS` without starting JAX; `--stage NAME` (used by the driver itself) runs one stage.
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CARRY_DIR = os.path.join(HERE, "carry")          # made by --prepare-carry; ignored by git
CARRY_SITE = os.path.join(CARRY_DIR, "site")     # a copy of the pure-Python ml_collections
CARRY_FMNIST = os.path.join(CARRY_DIR, "fashion-mnist")   # the four Fashion-MNIST IDX files
SCHEMA_VERSION = 1

STAGES = ("devices", "train_step", "sweep", "spectrum_overhead", "sharded", "real_run")
# Seconds each stage may take: (on the GPU, in the dry run). Generous estimates for the
# H200: compiling the ResNet-18 step takes tens of seconds per program, torch.compile about
# a minute per dtype. The real run has no cap: it gets the rest of the total.
# The dry run's caps are ~2x what the stages take on the 2-core VM, so that a busy machine
# (a parallel test run) slows it without cutting it short.
STAGE_CAPS = {"devices": (45, 60), "train_step": (170, 120), "sweep": (130, 150),
              "spectrum_overhead": (50, 90), "sharded": (30, 60)}
TOTAL_SECONDS = (470, 560)
# The real run's fixed costs (process start, calibration, compiling, checkpoints, plots,
# evaluation) and the least training worth running: (GPU, dry run).
REAL_RUN_OVERHEAD_S = (100, 50)
REAL_RUN_MIN_TRAIN_S = (15, 3)
TRAIN_SECONDS = (240, 5)
# Extra environment of a stage's process: JAX takes less of the GPU where PyTorch shares it.
STAGE_ENV = {"train_step": {"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.45"}}

# The issue's goals: (stage field, comparison, target, what it is).
GOALS = {
    "train_step_vs_torch_eager": ("stages.train_step.bf16.ratio_vs_torch_eager", ">=", 1.3,
                                  "bf16 train step, jaxssl img/s / PyTorch eager img/s"),
    "train_step_vs_torch_compile": ("stages.train_step.bf16.ratio_vs_torch_compile", ">=", 1.0,
                                    "bf16 train step, jaxssl img/s / torch.compile img/s"),
    "mfu_bf16": ("stages.train_step.bf16.jax.mfu_vs_paper_peak", ">=", 0.35,
                 "bf16 train step MFU (cost_analysis FLOPs / 989 TFLOP/s)"),
    "sweep_k8_small": ("stages.sweep.small.ratio_with_compile", ">=", 5.0,
                       "K=8 sweep vs 8 sequential runs (separate jobs), small ConvNet, wall time"),
    "spectrum_overhead_log_every_100": ("stages.spectrum_overhead.overhead_log_every_100", "<=", 0.05,
                                        "in-graph diagnostics at log_every=100, fraction of step time"),
}


# ----------------------------------------------------------------------------- fields

def _under(prefix: str, names: tuple[str, ...]) -> list[str]:
  return [f"{prefix}.{n}" for n in names]


def _fields() -> tuple[str, ...]:
  """Every leaf of results.json as a dotted path (lists and scalars are leaves)."""
  stage = ("status", "error", "wall_s", "limit_s")
  part = ("status",)
  top = ["schema_version", "mode", "argv", "started_utc", "wall_s", "total_limit_s", "stages_selected",
         "undeclared_fields"]
  s = "stages."
  devices = _under(s + "devices", stage + (
      "platform", "device_kind", "device_count", "devices", "jax_version", "jaxlib_version", "python",
      "cpu_count", "load_average", "torch_version", "torch_cuda_device")) + _under(
      s + "devices.matmul", part + ("n", "dtype", "iters", "seconds", "tflops_per_s", "paper_peak_tflops_per_s",
                                    "reference_peak_tflops_per_s"))
  train = _under(s + "train_step", stage + (
      "model", "batch", "image_shape", "augment", "optimizer", "bf16_method", "f32_precision", "warmup_steps",
      "timed_steps", "rounds", "torch_compile_backend", "torch_device"))
  for dt in ("bf16", "f32"):
    p = f"{s}train_step.{dt}"
    train += _under(p, ("ratio_vs_torch_eager", "ratio_vs_torch_compile"))
    train += _under(p + ".jax", part + ("compile_s", "first_step_s", "step_s", "images_per_s", "flops_per_step",
                                        "flops_per_step_lowered", "tflops_per_s", "mfu_vs_paper_peak",
                                        "mfu_vs_measured_peak", "last_loss"))
    train += _under(p + ".torch_eager", part + ("first_step_s", "step_s", "images_per_s", "last_loss"))
    train += _under(p + ".torch_compile", part + ("compile_s", "step_s", "images_per_s", "last_loss"))
  sweep = _under(s + "sweep", stage + ("members", "field", "values", "member_chunk", "start_step"))
  for m in ("small", "resnet18"):
    sweep += _under(f"{s}sweep.{m}", part + (
        "model", "batch", "steps", "sweep_build_s", "sweep_compile_s", "sweep_first_step_s", "sweep_step_s",
        "sweep_wall_s", "run_build_s", "run_compile_s", "run_first_step_s", "run_step_s_sum",
        "sequential_wall_s", "sequential_wall_one_compile_s", "ratio_steady", "ratio_with_compile",
        "ratio_with_one_compile", "max_abs_param_diff_per_member", "max_abs_param_diff", "max_abs_param",
        "max_abs_last_loss_diff", "check_tolerance", "check_passed"))
  spectrum = _under(s + "spectrum_overhead", stage + (
      "model", "batch", "steps_per_round", "rounds", "overhead_every_step", "overhead_log_every_100",
      "overhead_log_every_100_predicted"))
  for le in ("log_every_1", "log_every_100", "never"):
    spectrum += _under(f"{s}spectrum_overhead.{le}", part + ("log_every", "compile_s", "step_s"))
  sharded = _under(s + "sharded", stage + (
      "device_count", "rows", "dim_z", "dim_r", "max_rel_diff", "tolerance", "check_passed",
      "unsharded_spectrum_s", "sharded_spectrum_s")) + _under(s + "sharded.rel_diff", (
      "spectrum_z", "spectrum_r", "effective_rank_z", "effective_rank_r", "norm_z", "rankme_z", "rankme_r",
      "alignment", "uniformity", "nt_xent", "nt_xent_grad"))
  real = _under(s + "real_run", stage + (
      "dataset", "model", "encoder_kwargs", "batch", "augment", "idx_dir", "train_seconds_requested",
      "train_seconds_budget"))
  real += _under(s + "real_run.calibration", part + ("compile_s", "steps", "seconds", "steps_per_s"))
  real += _under(s + "real_run.train", part + (
      "num_steps", "steps_done", "wall_s", "interrupted", "images_per_s_last_log", "images_per_s_overall",
      "last_loss", "online_probe_acc", "effective_rank_z"))
  real += _under(s + "real_run.eval", part + (
      "wall_s", "linear_probe", "knn_20", "knn_200", "rankme_r", "alpha_req_r", "lidar_r",
      "raw_pixels_linear_probe", "random_init_linear_probe"))
  goals = [f"goals.{g}.{k}" for g in GOALS for k in ("value", "target", "met")]
  return tuple(top + devices + train + sweep + spectrum + sharded + real + goals)


FIELDS: tuple[str, ...] = _fields()


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  """{"a": {"b": 1}} -> {"a.b": 1}; lists and scalars are leaves."""
  out: dict[str, Any] = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
  """The inverse of `flatten`, keeping the order of first appearance."""
  out: dict[str, Any] = {}
  for key, v in flat.items():
    node = out
    *parents, leaf = key.split(".")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = v
  return out


# ----------------------------------------------------------------------------- environment

def _have(module: str) -> bool:
  try:
    importlib.import_module(module)
    return True
  except ImportError:
    return False


def prepare_environment(dry_run: bool) -> tuple[dict[str, str], list[str]]:
  """The environment of the stage processes, and notes on what was added to it.

  jaxssl and benchmarks/ go on PYTHONPATH; ml_collections comes from the carried copy
  where it is not installed (the GPU machine); the Fashion-MNIST IDX files from the
  carried copy where neither $JAXSSL_FMNIST_DIR nor Debian's directory has them; the
  .npy cache goes to $JAXSSL_DATA_DIR (default: <repo>/.cache/tensorflow_datasets).
  """
  env = dict(os.environ)
  notes = []
  paths = [ROOT, os.path.join(ROOT, "benchmarks")]
  if not _have("ml_collections"):
    if os.path.isdir(os.path.join(CARRY_SITE, "ml_collections")):
      paths.append(CARRY_SITE)
      sys.path.append(CARRY_SITE)
      notes.append(f"ml_collections from the carried copy {CARRY_SITE}")
    else:
      notes.append("ml_collections is not installed and not carried: run `bash benchmarks/gpu/run.sh "
                   "--prepare-carry` here and name benchmarks/gpu/carry in the device call's carry")
  env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [env.get("PYTHONPATH")] if p])
  env.setdefault("JAXSSL_DATA_DIR", os.path.join(ROOT, ".cache", "tensorflow_datasets"))
  if ("JAXSSL_FMNIST_DIR" not in env and not os.path.isdir(DEFAULT_FMNIST_DIR)
      and all(os.path.isfile(os.path.join(CARRY_FMNIST, n)) for n in FMNIST_IDX_FILES)):
    env["JAXSSL_FMNIST_DIR"] = CARRY_FMNIST
    notes.append(f"Fashion-MNIST IDX files from the carried copy {CARRY_FMNIST}")
  env["JAXSSL_QUIET"] = "1"          # no progress bar in the logs
  env["PYTHONUNBUFFERED"] = "1"
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  if dry_run:
    env.setdefault("JAX_PLATFORMS", "cpu")
    env.setdefault("CUDA_VISIBLE_DEVICES", "")   # PyTorch on the CPU too
    # Less LLVM optimisation: the tiny programs compile ~1.5x faster on the CPU.
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
  return env, notes


DEFAULT_FMNIST_DIR = "/usr/share/datasets/fashion-mnist"   # Debian's dataset-fashion-mnist
FMNIST_IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                    "t10k-labels-idx1-ubyte.gz")


def prepare_carry() -> int:
  """Makes benchmarks/gpu/carry/ (ignored by git) for the GPU machine, which lacks both:
  site/ml_collections (the pure-Python package, copied from this Python's installation)
  and fashion-mnist/ (the four IDX .gz files, ~30 MB, from $JAXSSL_FMNIST_DIR, else
  Debian's /usr/share/datasets/fashion-mnist)."""
  import gzip
  import ml_collections
  shutil.rmtree(CARRY_DIR, ignore_errors=True)
  shutil.copytree(os.path.dirname(ml_collections.__file__), os.path.join(CARRY_SITE, "ml_collections"),
                  ignore=shutil.ignore_patterns("__pycache__"))
  src = os.environ.get("JAXSSL_FMNIST_DIR", DEFAULT_FMNIST_DIR)
  os.makedirs(CARRY_FMNIST)
  for name in FMNIST_IDX_FILES:
    dest = os.path.join(CARRY_FMNIST, name)
    if os.path.exists(os.path.join(src, name)):
      shutil.copyfile(os.path.join(src, name), dest)
    else:   # an uncompressed copy
      with open(os.path.join(src, name[:-3]), "rb") as f, gzip.open(dest, "wb") as g:
        shutil.copyfileobj(f, g)
  size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(CARRY_DIR) for f in fs)
  print(f"{CARRY_DIR}: ml_collections {ml_collections.__version__} and the Fashion-MNIST IDX files from {src}, "
        f"{size / 2**20:.1f} MiB; name benchmarks/gpu/carry in the device call's carry")
  return 0


# ----------------------------------------------------------------------------- stage processes

def run_stage_process(name: str, args: argparse.Namespace, env: dict[str, str], limit_s: float,
                      stage_file: str, log: Any, extra: list[str]) -> tuple[str | None, str]:
  """Runs one stage in its own process group, killed at `limit_s`.

  Its output goes to stdout and `log`, prefixed with the stage's name. Returns
  (None, "") when it exited 0, else (status, error): "timeout" or "error", with the
  last lines it printed.
  """
  cmd = [sys.executable, os.path.abspath(__file__), "--stage", name, "--stage-file", stage_file,
         "--deadline", f"{time.time() + limit_s - 3:.1f}"] + (["--dry-run"] if args.dry_run else []) + extra
  stage_env = {**env, **STAGE_ENV.get(name, {})}
  group = {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}
  proc = subprocess.Popen(cmd, env=stage_env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace", **group)
  tail: list[str] = []

  def pump():
    for line in proc.stdout:
      line = line.rstrip("\n")
      tail.append(line)
      del tail[:-30]
      msg = f"[{name}] {line}"
      print(msg, flush=True)
      log.write(msg + "\n")
      log.flush()

  reader = threading.Thread(target=pump, daemon=True)
  reader.start()
  timed_out = False
  try:
    rc = proc.wait(timeout=limit_s)
  except subprocess.TimeoutExpired:
    timed_out, rc = True, None
  # The stage's process group: the stage and whatever it started (compile workers).
  try:
    os.killpg(proc.pid, signal.SIGKILL)
  except (ProcessLookupError, PermissionError):
    pass
  proc.wait()
  reader.join(timeout=10)
  if timed_out:
    return "timeout", f"killed at its time limit of {limit_s:.0f} s; last output: " + " | ".join(tail[-8:])
  if rc != 0:
    return "error", f"exit status {rc}; last output: " + " | ".join(tail[-12:])
  return None, ""


def _read_json(path: str) -> dict[str, Any]:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def _modes(dry_run: bool, pair: tuple[Any, Any]) -> Any:
  return pair[1] if dry_run else pair[0]


def run_all(args: argparse.Namespace) -> int:
  """Runs the selected stages and writes results.json, summary.txt and log.txt."""
  out_dir = args.out_dir or os.environ.get("OUT")
  if not out_dir:
    print("run.py: give an output directory (or set $OUT)", file=sys.stderr)
    return 2
  os.makedirs(out_dir, exist_ok=True)
  t_start = time.time()
  total = args.total_seconds or _modes(args.dry_run, TOTAL_SECONDS)
  deadline = t_start + total
  selected = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else list(STAGES)
  unknown = sorted(set(selected) - set(STAGES))
  if unknown:
    print(f"run.py: unknown stage(s) {unknown}; stages: {', '.join(STAGES)}", file=sys.stderr)
    return 2
  env, notes = prepare_environment(args.dry_run)
  flat: dict[str, Any] = {k: None for k in FIELDS}
  flat.update(schema_version=SCHEMA_VERSION, mode="dry-run" if args.dry_run else "gpu", argv=sys.argv[1:],
              started_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              total_limit_s=total, stages_selected=selected, undeclared_fields=[])
  train_requested = args.train_seconds if args.train_seconds is not None else _modes(args.dry_run, TRAIN_SECONDS)
  workdir = tempfile.mkdtemp(prefix="jaxssl_gpu_bench_")
  log = open(os.path.join(out_dir, "log.txt"), "w")
  for n in notes:
    print(f"run.py: {n}", flush=True)
    log.write(f"run.py: {n}\n")
  stop_reason = None
  for name in STAGES:
    p = f"stages.{name}."
    if name not in selected or stop_reason:
      flat[p + "status"] = "skipped"
      flat[p + "error"] = stop_reason or "not selected (--stages)"
      continue
    left = deadline - time.time()
    extra: list[str] = []
    if name == "real_run":
      limit = left
      fits = left - _modes(args.dry_run, REAL_RUN_OVERHEAD_S)
      budget = min(train_requested, fits)
      flat[p + "train_seconds_requested"] = train_requested
      flat[p + "train_seconds_budget"] = max(budget, 0.0)
      if fits < _modes(args.dry_run, REAL_RUN_MIN_TRAIN_S):
        flat[p + "status"], flat[p + "error"] = "skipped", f"no time left ({left:.0f} s of the total)"
        continue
      extra = ["--train-seconds-budget", f"{budget:.1f}", "--workdir", os.path.join(workdir, "real_run")]
    else:
      reserve = (_modes(args.dry_run, REAL_RUN_OVERHEAD_S) + _modes(args.dry_run, REAL_RUN_MIN_TRAIN_S)
                 if "real_run" in selected else 0)
      limit = min(_modes(args.dry_run, STAGE_CAPS[name]), left - reserve)
      if limit < 10:
        flat[p + "status"], flat[p + "error"] = "skipped", f"no time left ({left:.0f} s of the total)"
        continue
    stage_file = os.path.join(workdir, f"{name}.json")
    print(f"run.py: stage {name} (limit {limit:.0f} s, {left:.0f} s of the total left)", flush=True)
    t0 = time.time()
    status, error = run_stage_process(name, args, env, limit, stage_file, log, extra)
    fields = _read_json(stage_file)
    for k, v in fields.items():
      if p + k in flat:
        flat[p + k] = v
      else:
        flat["undeclared_fields"].append(p + k)
    if status is not None:   # killed or crashed: what it measured stays, the status says why it stopped
      flat[p + "status"] = status
      flat[p + "error"] = "; ".join(e for e in (fields.get("error"), error) if e)
    elif flat[p + "status"] is None:
      flat[p + "status"], flat[p + "error"] = "error", "the stage exited without a status"
    flat[p + "wall_s"] = round(time.time() - t0, 2)
    flat[p + "limit_s"] = round(limit, 1)
    if (name == "devices" and not args.dry_run and not args.allow_cpu and flat[p + "status"] == "ok"
        and flat[p + "platform"] != "gpu"):
      stop_reason = (f"no GPU: jax.devices() is on {flat[p + 'platform']!r}; use --dry-run on a CPU "
                     "(or --allow-cpu to run the GPU sizes anyway)")
  flat["wall_s"] = round(time.time() - t_start, 2)
  evaluate_goals(flat)
  results = unflatten(flat)
  with open(os.path.join(out_dir, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
  text = summary(flat)
  with open(os.path.join(out_dir, "summary.txt"), "w") as f:
    f.write(text + "\n")
  print(text, flush=True)
  log.write(text + "\n")
  log.close()
  shutil.rmtree(workdir, ignore_errors=True)   # the stage files (merged above) and the real run's workdir
  ok = all(flat[f"stages.{s}.status"] == "ok" for s in selected) and not flat["undeclared_fields"]
  return 0 if ok else 1


# ----------------------------------------------------------------------------- goals and summary

def evaluate_goals(flat: dict[str, Any]) -> None:
  """Fills goals.*: the measured value, the target, and whether it is met (null in a dry run
  or where the value was not measured)."""
  for goal, (field, op, target, _) in GOALS.items():
    v = flat.get(field)
    flat[f"goals.{goal}.value"] = v
    flat[f"goals.{goal}.target"] = f"{op} {target}"
    met = None
    if isinstance(v, (int, float)) and flat["mode"] == "gpu":
      met = bool(v >= target) if op == ">=" else bool(v <= target)
    flat[f"goals.{goal}.met"] = met


def _fmt(v: Any, spec: str = ".3g", unit: str = "") -> str:
  return "n/a" if not isinstance(v, (int, float)) or isinstance(v, bool) else f"{v:{spec}}{unit}"


def _pct(v: Any) -> str:
  return _fmt(100 * v if isinstance(v, (int, float)) else None, ".1f", " %")


def summary(flat: dict[str, Any]) -> str:
  """The short text summary: one line or two per stage, then the goals."""
  g = lambda k: flat.get(k)   # noqa: E731
  d, t, sw, sp, sh, rr = ("stages." + s + "." for s in STAGES)
  lines = [f"jaxssl GPU benchmark ({g('mode')}): {g(d + 'device_kind') or 'unknown device'} x{g(d + 'device_count')}, "
           f"jax {g(d + 'jax_version')}, torch {g(d + 'torch_version')}; {g('wall_s')} s of {g('total_limit_s')} s",
           "", f"{'stage':<19}{'status':<10}{'wall [s]':>9}  notes"]
  for s in STAGES:
    err = g(f"stages.{s}.error")
    lines.append(f"{s:<19}{str(g(f'stages.{s}.status')):<10}{_fmt(g(f'stages.{s}.wall_s'), '.0f'):>9}  "
                 + (str(err)[:150] if err else ""))
  lines += ["", f"matmul {g(d + 'matmul.dtype')} {g(d + 'matmul.n')}^3: {_fmt(g(d + 'matmul.tflops_per_s'))} "
            f"TFLOP/s (paper peak {g(d + 'matmul.paper_peak_tflops_per_s')}, seen here before "
            f"{g(d + 'matmul.reference_peak_tflops_per_s')})"]
  for dt in ("bf16", "f32"):
    p = f"{t}{dt}."
    lines.append(
        f"train step {dt} ({g(t + 'model')}, batch {g(t + 'batch')}): jaxssl {_fmt(g(p + 'jax.images_per_s'), '.0f')} img/s, "
        f"eager {_fmt(g(p + 'torch_eager.images_per_s'), '.0f')} ({_fmt(g(p + 'ratio_vs_torch_eager'), '.2f', 'x')}), "
        f"torch.compile {_fmt(g(p + 'torch_compile.images_per_s'), '.0f')} "
        f"({_fmt(g(p + 'ratio_vs_torch_compile'), '.2f', 'x')}); MFU {_pct(g(p + 'jax.mfu_vs_paper_peak'))} of paper "
        f"peak, {_pct(g(p + 'jax.mfu_vs_measured_peak'))} of measured")
  for m in ("small", "resnet18"):
    p = f"{sw}{m}."
    lines.append(
        f"sweep K={g(sw + 'members')} {g(p + 'model')} batch {g(p + 'batch')}: steady {_fmt(g(p + 'ratio_steady'), '.2f', 'x')}, "
        f"with compile {_fmt(g(p + 'ratio_with_compile'), '.2f', 'x')} (one compile "
        f"{_fmt(g(p + 'ratio_with_one_compile'), '.2f', 'x')}); member == run: max |param diff| "
        f"{_fmt(g(p + 'max_abs_param_diff'), '.1e')} ({'PASS' if g(p + 'check_passed') else 'not passed'})")
  lines.append(f"spectrum overhead ({g(sp + 'model')}, batch {g(sp + 'batch')}): every step "
               f"{_pct(g(sp + 'overhead_every_step'))}, log_every=100 {_pct(g(sp + 'overhead_log_every_100'))} "
               f"(predicted {_pct(g(sp + 'overhead_log_every_100_predicted'))})")
  lines.append(f"sharded vs unsharded ({g(sh + 'device_count')} device(s), {g(sh + 'rows')} rows): max rel diff "
               f"{_fmt(g(sh + 'max_rel_diff'), '.1e')} (tol {g(sh + 'tolerance')}): "
               f"{'PASS' if g(sh + 'check_passed') else 'not passed'}")
  lines.append(f"real run ({g(rr + 'dataset')}, {g(rr + 'model')}, batch {g(rr + 'batch')}): "
               f"{_fmt(g(rr + 'train_seconds_budget'), '.0f')} s budget, {g(rr + 'train.steps_done')} of "
               f"{g(rr + 'train.num_steps')} steps, {_fmt(g(rr + 'train.images_per_s_last_log'), '.0f')} img/s; "
               f"linear probe {_fmt(g(rr + 'eval.linear_probe'), '.2f', ' %')}, kNN-200 "
               f"{_fmt(g(rr + 'eval.knn_200'), '.2f', ' %')}, kNN-20 {_fmt(g(rr + 'eval.knn_20'), '.2f', ' %')}")
  lines += ["", "goals (issue):"]
  for goal, (_, _, _, what) in GOALS.items():
    met = g(f"goals.{goal}.met")
    verdict = "not evaluated (dry run)" if g("mode") != "gpu" else {True: "MET", False: "NOT MET"}.get(met, "not measured")
    lines.append(f"  {goal:<33}{_fmt(g(f'goals.{goal}.value'), '.3g'):>8} {g(f'goals.{goal}.target'):<8} {verdict}  ({what})")
  if g("undeclared_fields"):
    lines.append(f"undeclared fields (dropped): {g('undeclared_fields')}")
  return "\n".join(lines)


# ----------------------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("out_dir", nargs="?", default=None, help="where results.json etc. go (default: $OUT)")
  ap.add_argument("--dry-run", action="store_true", help="every stage at tiny sizes on the CPU")
  ap.add_argument("--stages", default=None, help=f"comma-separated subset of {','.join(STAGES)}")
  ap.add_argument("--train-seconds", type=float, default=None,
                  help="training budget of the real run (default 240; 5 in a dry run)")
  ap.add_argument("--total-seconds", type=float, default=None,
                  help=f"the whole run's limit (default {TOTAL_SECONDS[0]}; {TOTAL_SECONDS[1]} in a dry run)")
  ap.add_argument("--allow-cpu", action="store_true", help="run the GPU sizes even without a GPU")
  ap.add_argument("--prepare-carry", action="store_true",
                  help="make benchmarks/gpu/carry (ml_collections, Fashion-MNIST IDX files) for the device call")
  # Used by the driver for its stage processes:
  ap.add_argument("--stage", default=None, help=argparse.SUPPRESS)
  ap.add_argument("--stage-file", default=None, help=argparse.SUPPRESS)
  ap.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
  ap.add_argument("--train-seconds-budget", type=float, default=None, help=argparse.SUPPRESS)
  ap.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
  return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  if args.prepare_carry:
    return prepare_carry()
  if args.stage:
    sys.path[:0] = [HERE, ROOT, os.path.join(ROOT, "benchmarks")]
    import stages   # noqa: E402  (JAX is imported only in the stage processes)
    return stages.run_stage(args)
  return run_all(args)


if __name__ == "__main__":
  sys.exit(main())
