"""Resolve the `gpu` extra for a CUDA Linux machine (pip's resolver, dry run, no GPU needed) and check that the
resolved TRL gives verl's actor build the class it imports.

    .venv/bin/python scripts/check_gpu_resolution.py [--python_version 3.11] [--platform manylinux_2_28_x86_64]

It prints the resolved versions of the stack, downloads the resolved TRL wheel alone and runs verl's
``apply_monkey_patch`` (the code path of every actor build, which imports TRL's value-head class when TRL is
installed) on the tiny model with that TRL first on the path. Exit status 0 when the actor build imports cleanly.
Needs PyPI; not part of the test suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import click

from medvlthinker import cli

ROOT = Path(__file__).resolve().parent.parent
STACK = ("torch", "vllm", "verl", "transformers", "trl", "accelerate", "ray", "tensordict", "datasets")


def gpu_requirements(python_version: str) -> list[str]:
    """The `gpu` extra of pyproject.toml, markers evaluated for ``python_version``."""
    from packaging.requirements import Requirement

    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    env = {"python_version": python_version, "python_full_version": python_version + ".0"}
    reqs = [Requirement(r) for r in extra]
    return [str(r).split(";")[0].strip() for r in reqs if r.marker is None or r.marker.evaluate(env)]


@cli.command()
@click.option("--python_version", default="3.11", show_default=True)
@click.option("--platform", "platforms", multiple=True, show_default=True,
              default=[f"manylinux_2_{n}_x86_64" for n in range(5, 40)] + ["manylinux2014_x86_64", "linux_x86_64"])
def main(python_version, platforms):
    work = Path(tempfile.mkdtemp(prefix="gpu-resolution-"))
    report = work / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
           "--target", str(work / "target"), "--only-binary=:all:", "--implementation", "cp",
           "--python-version", python_version, *[a for p in platforms for a in ("--platform", p)],
           *gpu_requirements(python_version)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        errors = [line.strip() for line in proc.stderr.splitlines() if line.strip().startswith("ERROR")]
        raise cli.UserError("pyproject.toml [gpu]", f"the gpu extra does not resolve for Python {python_version} "
                            f"({' '.join(errors[-2:]) or proc.stderr.strip()[-300:]})",
                            fix="relax or pin the conflicting requirements of the extra")
    installed = {i["metadata"]["name"].lower(): i for i in json.loads(report.read_text())["install"]}
    click.echo(f"gpu extra, Python {python_version}: {len(installed)} packages")
    for name in STACK:
        click.echo(f"  {name:13s} {installed[name]['metadata']['version'] if name in installed else '-'}")
    trl = installed["trl"]["metadata"]["version"]
    wheel_dir = work / "trl"
    fetched = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                              str(wheel_dir), f"trl=={trl}"], capture_output=True, text=True)
    if fetched.returncode:
        raise cli.UserError(f"trl=={trl}", f"the wheel cannot be downloaded ({_last_line(fetched.stderr)})",
                            fix="check the connection to PyPI")
    from medvlthinker.tiny import tiny_model_path

    code = (
        "import torch, trl\n"
        "from transformers import Qwen2_5_VLForConditionalGeneration\n"
        "from verl.models.transformers.monkey_patch import apply_monkey_patch\n"
        f"m = Qwen2_5_VLForConditionalGeneration.from_pretrained({str(tiny_model_path())!r}, dtype=torch.float32)\n"
        "apply_monkey_patch(m, use_remove_padding=True)\n"
        "print(f'verl actor build imports cleanly with trl {trl.__version__}')\n"
    )
    check = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**__import__("os").environ, "PYTHONPATH": str(wheel_dir)})
    if check.returncode:
        raise cli.UserError(f"trl {trl}", f"verl's actor build does not import with it ({_last_line(check.stderr)})",
                            fix="pin trl in the gpu extra to a version whose value-head class verl imports")
    click.echo(_last_line(check.stdout))


def _last_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[-1]


if __name__ == "__main__":
    main()
