"""Each paper number lives on one line of code, in its home module; everything else imports it.

The home of the sampling and curation settings is medvlthinker/inference/settings.py, of the image bounds
medvlthinker/images.py, of the SFT hyperparameters medvlthinker/train/sft_config.py. A number re-typed as a setting's default elsewhere (``n=16``, ``--num_rollouts`` default 16,
``below=1``, ``12845056`` or ``16384 * 28 * 28``) fails here, naming the file and line.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = "medvlthinker/inference/settings.py"
IMAGES = "medvlthinker/images.py"
SFT = "medvlthinker/train/sft_config.py"
CODE = sorted(
    p for folder in ("medvlthinker", "eval", "data_process", "analysis", "train", "scripts", "benchmarks")
    for p in (ROOT / folder).rglob("*.py")
)

# (setting names, the paper's value, its home): a default of a matching name set to the value elsewhere is a re-type.
SETTINGS_FACTS = [
    (r"(^|_)(rollouts|max_count)$", 16, SETTINGS),
    (r"(^|_)below$", 1, SETTINGS),
    (r"(^|_)above$", 7, SETTINGS),
    (r"^(lr|learning_rate)$", 1e-5, SFT),
    (r"^weight_decay$", 1e-4, SFT),
    (r"^adam_beta2$", 0.95, SFT),
]
PIXEL_BOUNDS = {3136: "min_pixels", 12845056: "max_pixels"}


def _value(node: ast.AST):
    """The number a constant expression spells (``16384 * 28 * 28`` too), else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Add)):
        left, right = _value(node.left), _value(node.right)
        if left is not None and right is not None:
            return left * right if isinstance(node.op, ast.Mult) else left + right
    return None


def _settings(tree: ast.AST):
    """(name, value node) of every default, keyword argument, assignment and click option default in ``tree``."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            args = node.args
            positional = args.posonlyargs + args.args
            yield from zip((a.arg for a in positional[len(positional) - len(args.defaults):]), args.defaults)
            yield from ((a.arg, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None)
        elif isinstance(node, ast.Call):
            # n alone names many counts; beside a temperature it is the number of rollouts
            sampling = any(k.arg == "temperature" for k in node.keywords)
            yield from (("rollouts" if k.arg == "n" and sampling else k.arg, k.value) for k in node.keywords if k.arg)
            flags = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)
                     and a.value.startswith("--")]
            for k in node.keywords:
                if k.arg == "default" and flags:
                    yield flags[0].lstrip("-").replace("-", "_"), k.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            yield node.target.id, node.value
        elif isinstance(node, ast.Assign):
            yield from ((t.id, node.value) for t in node.targets if isinstance(t, ast.Name))


def _retyped(path: Path) -> list[str]:
    rel = path.relative_to(ROOT).as_posix()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for pattern, value, home in SETTINGS_FACTS:
        if rel == home:
            continue
        for name, node in _settings(tree):
            if re.search(pattern, name) and _value(node) == value:
                found.append(f"{rel}:{node.lineno}: {name}={value} re-types the paper's setting; fix: import it "
                             f"from {home}")
    if rel != IMAGES:
        for node in ast.walk(tree):
            if isinstance(node, (ast.Constant, ast.BinOp)) and _value(node) in PIXEL_BOUNDS:
                found.append(f"{rel}:{node.lineno}: {PIXEL_BOUNDS[_value(node)]} {_value(node)} re-typed; fix: "
                             f"import it from {IMAGES}")
    return found


@pytest.mark.parametrize("path", CODE, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_paper_number_is_retyped(path):
    assert _retyped(path) == []


def test_the_check_finds_a_retyped_number(tmp_path, monkeypatch):
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    bad = tmp_path / "bad.py"
    bad.write_text("def f(x, expected_rollouts=16, below=1):\n"
                   "    return g(n=16, temperature=1.0, max_pixels=16384 * 28 * 28)\n"
                   "@click.option('--num-rollouts', default=16)\ndef h(): pass\n")
    found = "\n".join(_retyped(bad))
    for needle in ("bad.py:1: expected_rollouts=16", "bad.py:1: below=1", "bad.py:2: rollouts=16",
                   "bad.py:2: max_pixels 12845056", "bad.py:3: num_rollouts=16"):
        assert needle in found


def test_each_fact_is_on_one_line_of_its_home():
    settings = (ROOT / SETTINGS).read_text(encoding="utf-8")
    assert len(re.findall(r"\bn=16\b", settings)) == 1
    assert len(re.findall(r"remove_pass_count_below: int = 1\b", settings)) == 1
    assert len(re.findall(r"remove_pass_count_above: int = 7\b", settings)) == 1
    images = (ROOT / IMAGES).read_text(encoding="utf-8")
    assert len(re.findall(r"(?<!\d)4 \* 28 \* 28", images)) == 1 and images.count("16384 * 28 * 28") == 1


def test_shell_recipes_use_the_presets():
    for name in ("estimate_pass_rate.sh", "eval_commands.sh", "eval_baselines.sh"):
        text = (ROOT / "eval" / name).read_text(encoding="utf-8")
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        assert "--preset" in code, name
        for flag in ("--temperature", "--top_p", "--max_tokens", "--n ", "--seed"):
            assert flag not in code, (name, flag)
