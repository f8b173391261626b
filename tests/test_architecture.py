"""The package's layout: no import cycle, no function-local imports hiding one, small modules,
and a method declared in one place (every registered method has a config and validates)."""
import ast
import os
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")
PKG = os.path.join(ROOT, "jaxssl")


def _modules() -> dict[str, str]:
  """{dotted module name: path} of every module in jaxssl/."""
  out = {}
  for dirpath, _, files in os.walk(PKG):
    for f in files:
      if f.endswith(".py"):
        rel = os.path.relpath(os.path.join(dirpath, f), ROOT)[:-3].replace(os.sep, ".")
        out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(dirpath, f)
  return out


MODULES = _modules()


def _targets(node: ast.AST, module: str) -> list[str]:
  """The jaxssl modules an import statement loads (a name imported from a package may be a module)."""
  names = []
  if isinstance(node, ast.Import):
    names = [a.name for a in node.names]
  elif isinstance(node, ast.ImportFrom):
    base = node.module or ""
    if node.level:   # relative import
      pkg = module.split(".")[:-node.level] if not MODULES[module].endswith("__init__.py") else \
          module.split(".")[:len(module.split(".")) - node.level + 1]
      base = ".".join(pkg + ([base] if base else []))
    # `from A import b`: the module A.b if b is one, else A itself (its namespace).
    names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
  return sorted({n for n in names if n in MODULES})


def _graph() -> dict[str, set[str]]:
  graph = {}
  for mod, path in MODULES.items():
    tree = ast.parse(open(path).read())
    deps = set()
    for node in tree.body:   # module-level imports (also inside if / try at module level)
      for sub in ast.walk(node) if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) else ():
        if isinstance(sub, (ast.Import, ast.ImportFrom)):
          deps.update(t for t in _targets(sub, mod) if t != mod)
    graph[mod] = deps
  return graph


def test_no_import_cycle_in_the_package():
  graph = _graph()
  assert graph["jaxssl.run"] and "jaxssl.step" in graph["jaxssl.run"]   # the parser sees real edges
  state, stack, cycles = {}, [], []

  def visit(m):
    state[m] = "open"
    stack.append(m)
    for d in sorted(graph[m]):
      if state.get(d) == "open":
        cycles.append(stack[stack.index(d):] + [d])
      elif d not in state:
        visit(d)
    stack.pop()
    state[m] = "done"

  for m in sorted(graph):
    if m not in state:
      visit(m)
  # A package's __init__ importing its own submodules is not a cycle at run time only when
  # the submodules do not import the package back; both directions would show up here.
  assert not cycles, f"import cycles: {cycles}"


def test_no_function_local_imports_of_jaxssl():
  """Lazy imports are for optional dependencies (tensorflow, torch), never to dodge a cycle."""
  bad = []
  for mod, path in MODULES.items():
    tree = ast.parse(open(path).read())
    for fn in ast.walk(tree):
      if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
        for sub in ast.walk(fn):
          if isinstance(sub, (ast.Import, ast.ImportFrom)) and (
              _targets(sub, mod) or (isinstance(sub, ast.ImportFrom) and sub.level)):
            bad.append(f"{mod}:{sub.lineno}")
  assert not bad, f"function-local imports of jaxssl modules: {bad}"


def test_only_the_cli_imports_run():
  importers = sorted(m for m, deps in _graph().items() if "jaxssl.run" in deps)
  assert importers == ["jaxssl.cli"]


def test_each_module_imports_on_its_own():
  """Each module imported first, in a fresh interpreter state of jaxssl (jax stays loaded)."""
  code = (
      "import importlib, sys, jax\n"
      f"mods = {sorted(MODULES)!r}\n"
      "for m in mods:\n"
      "  for k in [k for k in sys.modules if k == 'jaxssl' or k.startswith('jaxssl.')]:\n"
      "    del sys.modules[k]\n"
      "  importlib.import_module(m)\n"
      "print('ok', len(mods))\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip() == f"ok {len(MODULES)}"


def test_modules_are_at_most_500_lines():
  long = {m: n for m, p in MODULES.items()
          if not (m.startswith("jaxssl.dynamics") or m == "jaxssl.augment")
          and (n := sum(1 for _ in open(p))) > 500}
  assert not long, f"modules over 500 lines: {long}"


def test_python_m_jaxssl_is_the_cli():
  out = subprocess.run([sys.executable, "-m", "jaxssl", "--help"], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
  assert out.returncode == 0, out.stderr[-2000:]
  for command in ("train", "eval", "plot", "sweep"):
    assert command in out.stdout


@pytest.mark.parametrize("name", sorted(__import__("jaxssl.methods", fromlist=["METHODS"]).METHODS))
def test_every_method_has_a_config_that_validates(name):
  from jaxssl import config as config_lib
  from jaxssl.methods import get_method
  cfg = config_lib.load_config(os.path.join(ROOT, "experiments", "configs", f"{name}.py"))
  method = get_method(name)
  assert cfg.method == name
  # The method's sections hold exactly its declared hyperparameters.
  for h in method.hparams:
    assert h.name in cfg[h.section], h.field
  for section in ("loss", "ema", "predictor"):
    declared = {h.name for h in method.hparams if h.section == section}
    assert set(cfg.get(section, {}) or {}) == declared, section
