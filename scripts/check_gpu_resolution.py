"""Resolve the `gpu` extra for a CUDA Linux machine (pip's resolver, dry run, no GPU needed) and check that the
resolved TRL gives verl's actor build the class it imports.

    .venv/bin/python scripts/check_gpu_resolution.py [--python_version 3.11] [--platform manylinux_2_28_x86_64]

It prints the resolved versions of the stack, downloads the resolved TRL wheel alone and runs verl's
``apply_monkey_patch`` (the code path of every actor build, which imports TRL's value-head class when TRL is
installed) on the tiny model with that TRL first on the path. Exit status 0 when the actor build imports cleanly.
Needs PyPI; not part of the test suite.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import click

from medvlthinker import cli
from medvlthinker.cluster.wheelhouse import PLATFORMS, resolve

STACK = ("torch", "vllm", "verl", "transformers", "trl", "accelerate", "ray", "tensordict", "datasets")


@cli.command()
@click.option("--python_version", default="3.11", show_default=True)
@click.option("--platform", "platforms", multiple=True, default=PLATFORMS, help="default: manylinux x86-64")
def main(python_version, platforms):
    work = Path(tempfile.mkdtemp(prefix="gpu-resolution-"))
    packages = resolve(python_version, platforms=tuple(platforms))["packages"]
    click.echo(f"gpu extra, Python {python_version}: {len(packages)} packages")
    for name in STACK:
        click.echo(f"  {name:13s} {packages.get(name, '-')}")
    trl = packages["trl"]
    wheel_dir = work / "trl"
    fetched = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                              str(wheel_dir), f"trl=={trl}"], capture_output=True, text=True)
    if fetched.returncode:
        raise cli.UserError(f"trl=={trl}", f"the wheel cannot be downloaded ({_last_line(fetched.stderr)})",
                            fix="check the connection to PyPI")
    from medvlthinker.demo.tiny import tiny_model_path

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
