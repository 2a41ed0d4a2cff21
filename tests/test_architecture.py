"""The shape of the package: the torch boundary, no import cycles, short functions, one CLI.

Checked on the source tree (ast) and in fresh interpreters (sys.modules), not on prose.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "i2x"
MODULES = {".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__"): p for p in PKG.rglob("*.py")}
# modules that never import torch, at any level (the report and the numpy stages)
TORCH_FREE = [m for m in MODULES if m.startswith(("i2x.analysis", "i2x.report"))] + [
    "i2x",
    "i2x.compare_runs",
    "i2x.config",
    "i2x.errors",
    "i2x.manifest",
    "i2x.presets",
    "i2x.rundir",
    "i2x.store",
]


def _imports(module: str, module_level_only: bool = False) -> set[str]:
    """Absolute names of the modules ``module`` imports (function-level imports included unless
    ``module_level_only``); ``from .pkg import sub`` counts as importing ``pkg.sub`` when it is a module."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else ast.walk(tree)
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            subs = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES}
            out |= subs or {base}
    return out


@pytest.mark.parametrize("module", sorted(TORCH_FREE))
def test_torch_free_modules_never_import_torch_or_model_code(module):
    for name in _imports(module):
        assert name.split(".")[0] not in ("torch", "torchvision"), f"{module} imports {name}"
        assert not name.startswith("i2x.nn"), f"{module} imports {name} (model code, behind the torch boundary)"


def test_no_module_outside_nn_imports_torch_at_import_time():
    for module in MODULES:
        if module.startswith("i2x.nn"):
            continue
        for name in _imports(module, module_level_only=True):
            assert name.split(".")[0] != "torch" and not name.startswith("i2x.nn"), f"{module} imports {name}"


def test_fresh_interpreter_imports_load_no_torch():
    mods = [
        "i2x",
        "i2x.report",
        "i2x.cli",
        "i2x.rundir",
        "i2x.store",
        "i2x.config",
        "i2x.presets",
        "i2x.data",
        *sorted(m for m in MODULES if m.startswith(("i2x.analysis", "i2x.report", "i2x.cli"))),
    ]
    code = (
        "import sys, importlib\n"
        f"for m in {mods!r}:\n"
        "    importlib.import_module(m)\n"
        "import i2x\n"
        "i2x.prototypes, i2x.explain, i2x.Run, i2x.RunConfig, dir(i2x)\n"
        "bad = sorted(m for m in sys.modules\n"
        "             if m.split('.')[0] in ('torch', 'torchvision') or m.startswith('i2x.nn'))\n"
        "print(','.join(bad))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "", f"torch-side modules loaded: {r.stdout.strip()[:300]}"
    # and the torch-side names still resolve, lazily
    code = "import sys, i2x; f = i2x.saliency; print(callable(f), 'torch' in sys.modules, i2x.models.SmallCNN.__name__)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.split() == ["True", "True", "SmallCNN"]


def test_no_import_cycle_among_i2x_modules():
    graph = {m: {n for n in _imports(m) if n in MODULES and n != m} for m in MODULES}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(m, path):
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(n) :] + [n]))
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(MODULES):
        if m not in state:
            visit(m, [m])


def test_no_function_longer_than_80_lines():
    long = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long.append(f"{module}.{node.name}: {n} lines")
    assert not long, long


def test_argparse_only_in_the_cli():
    for module in MODULES:
        if not module.startswith("i2x.cli"):
            assert "argparse" not in _imports(module), f"{module} imports argparse: flags belong in i2x.cli"


def test_every_setting_has_help_and_a_reason():
    from dataclasses import fields

    from i2x.config import ExplainConfig, FaithfulnessConfig, FinetuneConfig, RunConfig

    for cls in (RunConfig, ExplainConfig, FinetuneConfig, FaithfulnessConfig):
        for f in fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"
            if f.name != "explain":
                assert f.metadata.get("why"), f"{cls.__name__}.{f.name} does not say why its default"


# issue 22: layers only look down, one place for each rule
ANALYSIS = sorted(m for m in MODULES if m.startswith("i2x.analysis"))


@pytest.mark.parametrize("module", ANALYSIS)
def test_analysis_imports_nothing_above_it(module):
    """The numpy stages know no run directory, report, model code or command line (any level)."""
    for name in _imports(module):
        assert not name.startswith(("i2x.rundir", "i2x.report", "i2x.nn", "i2x.cli")), f"{module} imports {name}"


@pytest.mark.parametrize("module", ["i2x.nn.finetune", "i2x.nn.faithfulness"])
def test_commands_on_a_run_do_not_import_the_pipeline(module):
    assert "i2x.nn.pipeline" not in _imports(module), f"{module} imports the pipeline (load_model is in nn.models)"


def test_no_test_module_imports_another():
    tests = Path(__file__).resolve().parent
    names = {p.stem for p in tests.glob("test_*.py")}
    for path in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            found = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                found = [node.module or ""]
            for name in found:
                assert name.split(".")[-1] not in names, f"{path.name} imports the test module {name}"


def test_run_config_is_built_only_by_the_resolver():
    """Settings are resolved in one place (config.resolve); elsewhere a RunConfig comes from it,
    from a saved dict (RunConfig.from_dict) or from the caller."""
    for module, path in MODULES.items():
        if module == "i2x.config":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
                assert name != "RunConfig", f"{module}:{node.lineno} builds a RunConfig (use i2x.config.resolve)"


def _strings(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node


@pytest.mark.parametrize("module", ANALYSIS)
def test_analysis_messages_name_no_command_line_flag(module):
    """Library errors name the Python argument; the CLI turns settings into flags (cli.cli_message)."""
    import re

    tree = ast.parse(MODULES[module].read_text())
    docs = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body and isinstance(n.body[0], ast.Expr)
    }
    for node in _strings(tree):
        if id(node) in docs:
            continue
        flags = re.findall(r"(?<![\w-])--[a-z][a-z-]+", node.value)
        assert not flags, f"{module}:{node.lineno} writes the flag {flags[0]} into a message"
