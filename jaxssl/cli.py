"""`jaxssl` command line.

  jaxssl config --config experiments/configs/simclr.py [--config.a.b=v ...]   (print the resolved config)
  jaxssl train --config experiments/configs/simclr.py [--config.a.b=v ...] --workdir DIR [--resume]
  jaxssl eval  --workdir DIR
  jaxssl plot  --workdir DIR
  jaxssl sweep --config CFG --sweep 'loss.temperature=0.1,0.2' [--sweep ...] --workdir DIR

Multi-host: pass --coordinator HOST:PORT --num-processes N --process-id I (or the
JAXSSL_COORDINATOR / JAXSSL_NUM_PROCESSES / JAXSSL_PROCESS_ID environment variables);
on Cloud TPU pods and SLURM the cluster is detected automatically.
"""
from __future__ import annotations

import argparse
import os
import sys

from jaxssl import config as config_lib
from jaxssl import evaluate
from jaxssl import export as export_lib
from jaxssl import parallel
from jaxssl import plots
from jaxssl import run
from jaxssl import supervise
from jaxssl.errors import ConfigError, JaxsslError


def _common(p: argparse.ArgumentParser) -> None:
  p.add_argument("--workdir", required=True, help="run directory (checkpoints, metrics, plots)")
  p.add_argument("--coordinator", default=None, help="multi-host: coordinator address host:port")
  p.add_argument("--num-processes", type=int, default=None, help="multi-host: number of processes")
  p.add_argument("--process-id", type=int, default=None, help="multi-host: this process's id")


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="jaxssl", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="command", required=True)
  t = sub.add_parser("train", help="train a model from a config file")
  t.add_argument("--config", required=True, help="experiments/configs/<name>.py")
  t.add_argument("--resume", action="store_true", help="continue the run in --workdir")
  t.add_argument("--no-eval", action="store_true", help="skip kNN / linear-probe evaluation at the end")
  _common(t)
  e = sub.add_parser("eval", help="kNN and linear-probe evaluation of the latest checkpoint")
  _common(e)
  e.add_argument("--no-baselines", action="store_true", help="skip raw-pixel and random-init baselines")
  pl = sub.add_parser("plot", help="spectrum, training-curve and eval-vs-baselines PNGs of a run")
  pl.add_argument("--workdir", required=True)
  c = sub.add_parser("config", help="print the resolved config: every field, its value and what it does")
  c.add_argument("--config", required=True, help="experiments/configs/<name>.py[:dataset]")
  s = sub.add_parser("sweep", help="train the Cartesian product of hyperparameters in one vmapped program")
  s.add_argument("--config", required=True)
  s.add_argument("--sweep", action="append", default=[], help="'field=v1,v2,...' (repeatable)")
  s.add_argument("--resume", action="store_true")
  s.add_argument("--no-eval", action="store_true")
  s.add_argument("--select", choices=("rankme", "lidar", "alpha_req", "linear_probe"), default=None,
                 help="choose a member by a label-free criterion (or the linear probe): selection.json, "
                      "selection.png, summary.md ranked")
  _common(s)
  x = sub.add_parser("export", help="write a run's trained network to one file (+ .json config) for downstream use")
  x.add_argument("--workdir", required=True, help="the run directory (a sweep member: W/members/<i>)")
  x.add_argument("--out", required=True, help="output file (flax msgpack); its config goes to OUT.json")
  return parser


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  # --config.a.b=v overrides are ours, not argparse's.
  overrides = [a for a in argv if a.startswith("--config.")]
  rest = [a for a in argv if not a.startswith("--config.")]
  args = build_parser().parse_args(rest)
  try:
    supervision = _multi_process_ids(args)
    if supervision is not None and not supervise.is_supervised_child():
      return supervise.run_supervised(argv, *supervision, getattr(args, "workdir", None))
    return _run(args, overrides)
  except JaxsslError as e:
    print(f"jaxssl {args.command}: error: {e}", file=sys.stderr)
    return 2
  except Exception as e:
    if not parallel.is_peer_failure(e):
      raise
    print(f"jaxssl {args.command}: error: {parallel.peer_failure_message(e)}",
          file=sys.stderr, flush=True)
    sys.stdout.flush()
    # Skip JAX's shutdown barrier: it waits for the dead process and then aborts with a C++
    # stack trace. Everything this process wrote is already on disk (checkpoints are atomic).
    os._exit(parallel.PEER_FAILURE_EXIT_CODE)
  except KeyboardInterrupt:
    where = getattr(args, "workdir", None)
    print(f"\njaxssl {args.command}: interrupted. The last complete checkpoint in {where}/checkpoints is "
          "intact; continue with --resume.", file=sys.stderr)
    return 130


def end_of_run_summary(summary: dict, workdir: str) -> str:
  """What a finished (or stopped) run says last: its step, final loss, ranks and files."""
  last = summary.get("last") or {}
  if isinstance(last, list):          # a sweep: one record per member
    last = last[0] if len(last) == 1 else {}
  parts = [f"step {summary.get('step')}"]
  for key, fmt in (("loss", ".4f"), ("effective_rank_z", ".1f"), ("effective_rank_r", ".1f"),
                   ("rankme_z", ".1f")):
    if isinstance(last.get(key), (int, float)):
      parts.append(f"{key} {last[key]:{fmt}}")
  written = [name for name in ("checkpoints", "metrics.jsonl", "tensorboard", "config.json", "eval.json",
                               "summary.md", "selection.json", "members")
             if os.path.exists(os.path.join(workdir, name))]
  state = f" (stopped by {summary['interrupted']})" if summary.get("interrupted") else ""
  return f"finished{state}: {', '.join(parts)}. Written in {workdir}: {', '.join(written)}."


def _multi_process_ids(args) -> tuple[int, int] | None:
  """(process id, number of processes) of an explicitly multi-process command, else None."""
  if args.command not in ("train", "sweep", "eval"):
    return None
  n = args.num_processes if args.num_processes is not None else (
      parallel.env_int("JAXSSL_NUM_PROCESSES") if os.environ.get("JAXSSL_NUM_PROCESSES") else None)
  pid = args.process_id if args.process_id is not None else (
      parallel.env_int("JAXSSL_PROCESS_ID") if os.environ.get("JAXSSL_PROCESS_ID") else None)
  for size, rank in (("SLURM_NTASKS", "SLURM_PROCID"), ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK")):
    if n is None and pid is None and os.environ.get(size) and os.environ.get(rank):  # auto-detected clusters
      n, pid = parallel.env_int(size), parallel.env_int(rank)
  if n is None or pid is None or n <= 1:
    return None
  return pid, n


def _run(args, overrides) -> int:
  if args.command == "config":
    print(config_lib.describe_config(config_lib.load_config(args.config, overrides)))
    return 0
  if args.command not in ("plot", "export"):
    parallel.set_failure_workdir(getattr(args, "workdir", None))
    parallel.initialize_distributed(args.coordinator, args.num_processes, args.process_id)
  if args.command == "train":
    cfg = config_lib.load_config(args.config, overrides)
    summary = run.train(cfg, args.workdir, resume=args.resume, evaluate_at_end=False if args.no_eval else None)
    print(end_of_run_summary(summary, args.workdir))
    if "eval" in summary:
      print(evaluate.format_results(summary["eval"]))
    return 0
  if args.command == "eval":
    res = run.evaluate_workdir(args.workdir, baselines=False if args.no_baselines else None)
    print(evaluate.format_results(res))
    return 0
  if args.command == "plot":
    if not os.path.exists(os.path.join(args.workdir, "metrics.jsonl")):
      raise ConfigError(f"--workdir {args.workdir!r} has no metrics.jsonl to plot; pass the --workdir of a "
                        "`jaxssl train` or `jaxssl sweep` run.")
    try:
      paths = plots.plot_workdir(args.workdir)
    except OSError as e:
      raise ConfigError(f"cannot write the plots into {args.workdir!r} ({e.strerror}); copy the run to a "
                        "writable directory and plot it there.") from None
    for path in paths:
      print(path)
    return 0
  if args.command == "export":
    for path in export_lib.export_encoder(args.workdir, args.out):
      print(path)
    print("load it with: encode, variables = jaxssl.load_exported(OUT); r = encode(variables, images)")
    return 0
  if args.command == "sweep":
    cfg = config_lib.load_config(args.config, overrides)
    out = run.sweep(cfg, args.sweep, args.workdir, resume=args.resume, evaluate_at_end=not args.no_eval,
                    select=args.select)
    summary_md = os.path.join(args.workdir, "summary.md")
    if os.path.exists(summary_md):
      print(open(summary_md).read().rstrip())
    print(end_of_run_summary(out, args.workdir))
    if "selection" in out:
      sel = out["selection"]
      print(f"selected member {sel['chosen_member']} by {sel['criterion']} ({sel['key']}): "
            f"{out['members'][sel['chosen_member']]}; ranking {sel['ranking']}")
    return 0
  return 1


if __name__ == "__main__":
  sys.exit(main())
