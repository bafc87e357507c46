"""The environment variables: one registry (medvlthinker/env.py), one table (docs/environment.md), checked both ways."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from medvlthinker import env

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "medvlthinker"
DOC = ROOT / "docs" / "environment.md"
RECIPE_DIRS = ("train", "eval", "data_process", "scripts")
GETTERS = {"get", "flag", "integer"}
KNOB = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?([-+])([^}]*)\}")


def _is_os_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ" and isinstance(node.value, ast.Name) \
        and node.value.id == "os"


def _module_strings(tree: ast.Module) -> dict[str, str]:
    """The module's top-level ``NAME = "..."`` constants."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            out.update({t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)})
    return out


def environment_reads(source: str) -> tuple[list[str], list[str]]:
    """(reads of ``os.environ``/``os.getenv`` that bypass the registry, names read through ``env.get/flag/integer``
    or held by an ``ENV``-named constant) in one module's source.

    Setting a variable for a child process (``dict(os.environ, X=...)``, ``os.environ.update``, ``os.environ[X] = v``)
    and iterating ``os.environ`` are not reads of a named variable.

    >>> environment_reads('import os\\nx = os.environ.get("A")\\ny = os.environ["B"]\\nz = os.getenv("C")')
    (['line 2: os.environ.get', 'line 3: os.environ[...]', 'line 4: os.getenv'], [])
    >>> environment_reads('from medvlthinker import env\\nENV = "A"\\nenv.flag(ENV)\\nenv.get("B")\\nAPI_KEY_ENV = "C"')
    ([], ['A', 'C', 'A', 'B'])
    >>> environment_reads('import os\\nos.environ.update(a=1)\\nos.environ["X"] = "1"\\nd = dict(os.environ, X="1")')
    ([], [])
    """
    tree = ast.parse(source)
    constants = _module_strings(tree)
    bypass, names = [], []
    for name, value in constants.items():
        if name == "ENV" or name.startswith("ENV_") or name.endswith("_ENV"):
            names.append(value)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner, attr = node.func.value, node.func.attr
            if _is_os_environ(owner) and attr == "get":
                bypass.append(f"line {node.lineno}: os.environ.get")
            elif isinstance(owner, ast.Name) and owner.id == "os" and attr == "getenv":
                bypass.append(f"line {node.lineno}: os.getenv")
            elif isinstance(owner, ast.Name) and owner.id == "env" and attr in GETTERS and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    names.append(arg.value)
                elif isinstance(arg, ast.Name) and arg.id in constants:
                    names.append(constants[arg.id])
        elif isinstance(node, ast.Subscript) and _is_os_environ(node.value) and isinstance(node.ctx, ast.Load):
            bypass.append(f"line {node.lineno}: os.environ[...]")
        elif isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops) \
                and any(_is_os_environ(c) for c in node.comparators):
            bypass.append(f"line {node.lineno}: ... in os.environ")
        elif isinstance(node, ast.ImportFrom) and node.module == "os" \
                and any(a.name in ("environ", "getenv") for a in node.names):
            bypass.append(f"line {node.lineno}: from os import environ/getenv")
    return bypass, names


def shell_knobs() -> dict[str, list[tuple[str, str]]]:
    """Each ``${NAME:-default}`` / ``${NAME:+...}`` knob of the shell recipes: [(recipe, default), ...]."""
    knobs: dict[str, list[tuple[str, str]]] = {}
    for folder in RECIPE_DIRS:
        for script in sorted((ROOT / folder).rglob("*.sh")):
            for name, op, default in KNOB.findall(script.read_text()):
                knobs.setdefault(name, []).append((str(script.relative_to(ROOT)), default if op == "-" else ""))
    return knobs


def doc_names() -> set[str]:
    """The variables docs/environment.md's tables list (the first cell of a row)."""
    return set(re.findall(r"^\| `([A-Za-z_][A-Za-z0-9_]*)`", DOC.read_text(), flags=re.MULTILINE))


def test_every_read_in_the_package_goes_through_the_registry():
    bypass, undeclared = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "env.py":
            continue
        where = path.relative_to(ROOT)
        reads, names = environment_reads(path.read_text())
        bypass += [f"{where} {read}" for read in reads]
        undeclared += [f"{where}: {name}" for name in names if name not in env.REGISTRY]
    assert not bypass, f"read these through medvlthinker.env (env.get/flag/integer): {bypass}"
    assert not undeclared, f"declare these in medvlthinker/env.py's VARIABLES: {undeclared}"


def test_the_doc_table_is_the_registry():
    text = DOC.read_text()
    assert env.table() in text, "docs/environment.md's table differs from the registry; fix: paste the output of " \
                                "`python -m medvlthinker.env` into it"
    assert set(env.REGISTRY) <= doc_names()


def test_every_shell_knob_is_in_the_doc_table_with_its_default():
    knobs = shell_knobs()
    assert {"PREFLIGHT_ROWS", "DEMO_SEED", "REPEATS", "API_BASE"} <= set(knobs)  # the scan finds them
    missing = sorted(set(knobs) - doc_names())
    assert not missing, f"list these shell knobs in docs/environment.md: {missing}"
    for name in set(knobs) & set(env.REGISTRY):
        for recipe, default in knobs[name]:
            assert default == env.REGISTRY[name].default, f"{recipe}: ${{{name}:-{default}}} differs from env.py"


def test_the_command_prints_the_table():
    out = subprocess.run([sys.executable, "-m", "medvlthinker.env"], capture_output=True, text=True, check=True)
    assert out.stdout == env.table()
    assert all(f"| `{name}` |" in out.stdout for name in env.REGISTRY)


def test_get_reads_the_value_else_the_declared_default(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert env.get("WORLD_SIZE") == "1" and env.integer("WORLD_SIZE") == 1
    monkeypatch.setenv("WORLD_SIZE", "16")
    assert env.integer("WORLD_SIZE") == 16
    monkeypatch.delenv("MEDVLTHINKER_CACHE", raising=False)
    assert env.get("MEDVLTHINKER_CACHE") is None
    monkeypatch.setenv("MEDVLTHINKER_CACHE", "")
    assert env.get("MEDVLTHINKER_CACHE") == ""


def test_a_number_that_is_not_one_is_a_one_line_error(monkeypatch):
    from medvlthinker.errors import UserError

    monkeypatch.setenv("WORLD_SIZE", "eight")
    with pytest.raises(UserError) as caught:
        env.integer("WORLD_SIZE")
    assert str(caught.value) == ("environment variable WORLD_SIZE: is 'eight', not a whole number; fix: set it to "
                                 "a whole number, or unset it")


def test_raw_is_the_value_as_set_without_the_default(monkeypatch):
    monkeypatch.delenv("MEDVLTHINKER_KEEP_FREED_MEMORY", raising=False)
    assert env.raw("MEDVLTHINKER_KEEP_FREED_MEMORY") is None and env.get("MEDVLTHINKER_KEEP_FREED_MEMORY") == "1"
    monkeypatch.setenv("MEDVLTHINKER_KEEP_FREED_MEMORY", " 0")
    assert env.raw("MEDVLTHINKER_KEEP_FREED_MEMORY") == " 0"
    with pytest.raises(KeyError, match="not declared"):
        env.raw("SOME_UNDECLARED_VARIABLE")


def test_a_fallback_is_read_where_the_variable_is_unset(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert env.integer("RANK") == 0
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert env.integer("RANK") == 3
    monkeypatch.setenv("RANK", "5")
    assert env.integer("RANK") == 5


@pytest.mark.parametrize("value, on_by_default, off_by_default", [
    (None, True, False), ("1", True, True), ("0", False, False), (" 0 ", False, False), (" 1\n", True, True),
    ("", True, False), ("yes", True, False),
])
def test_a_switch_turns_only_on_the_value_opposite_its_default(monkeypatch, value, on_by_default, off_by_default):
    for name in ("MEDVLTHINKER_KEEP_FREED_MEMORY", "MEDVLTHINKER_RESPONSE_LOGITS"):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert env.flag("MEDVLTHINKER_KEEP_FREED_MEMORY") is on_by_default
    assert env.flag("MEDVLTHINKER_RESPONSE_LOGITS") is off_by_default


def test_an_undeclared_name_or_a_non_switch_is_refused(monkeypatch):
    monkeypatch.setenv("SOME_UNDECLARED_VARIABLE", "1")
    for read in (env.get, env.flag, env.integer):
        with pytest.raises(KeyError, match="SOME_UNDECLARED_VARIABLE is not declared in medvlthinker/env.py"):
            read("SOME_UNDECLARED_VARIABLE")
    with pytest.raises(ValueError, match="VERL_PLATFORM is not a switch"):
        env.flag("VERL_PLATFORM")
    assert env.user_named("SOME_UNDECLARED_VARIABLE") == "1"  # --api_key_env names any variable


def test_the_readers_parse_as_before(monkeypatch):
    """The package's readers through the registry: the same defaults and parsing as their former own reads."""
    from medvlthinker.compat import cpu_allocator, verl_cpu, verl_response_logits, verl_text_only
    from medvlthinker.demo.tiny import default_cache_dir
    from medvlthinker.inference.backends import visible_devices

    monkeypatch.setenv("VERL_PLATFORM", " CPU ")
    monkeypatch.setenv("MEDVLTHINKER_VERL_CPU_DISABLE", "platform, gloo_backend,")
    monkeypatch.setenv("MEDVLTHINKER_RESPONSE_LOGITS", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    monkeypatch.setenv("MEDVLTHINKER_CACHE", "/some/cache")
    assert verl_cpu.cpu_profile() and verl_cpu.disabled() == {"platform", "gloo_backend"}
    assert verl_response_logits.requested()
    assert visible_devices() == ["2", "3"] and default_cache_dir() == Path("/some/cache")
    monkeypatch.delenv("VERL_PLATFORM")
    monkeypatch.delenv("MEDVLTHINKER_VERL_CPU_DISABLE")
    monkeypatch.delenv("MEDVLTHINKER_RESPONSE_LOGITS")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.delenv("MEDVLTHINKER_CACHE")
    assert not verl_cpu.cpu_profile() and verl_cpu.disabled() == set() and not verl_response_logits.requested()
    assert visible_devices() == [] and default_cache_dir() == ROOT / ".cache"
    monkeypatch.delenv(verl_text_only.ENV_DISABLE, raising=False)
    monkeypatch.delenv(cpu_allocator.ENV, raising=False)
    assert not verl_text_only.PATCH.switched() and not cpu_allocator.PATCH.switched()
    monkeypatch.setenv(verl_text_only.ENV_DISABLE, "0")
    monkeypatch.setenv(cpu_allocator.ENV, "0")
    assert verl_text_only.PATCH.switched() and cpu_allocator.PATCH.switched()
    monkeypatch.setattr(cpu_allocator, "_kept", False)
    assert cpu_allocator.keep_freed_memory() is False
