"""A folder of wheels that installs the `gpu` extra on a node without network (``scripts/make_wheelhouse.sh``).

pip resolves the extra for the target (CPython version, Linux x86-64 manylinux tags) on any machine, here or on a
login node with network, binary wheels only; a requirement that PyPI has only as a source archive is built into a
wheel here when it is pure Python (``py3-none-any``), and stops the run otherwise, naming it. The folder then holds
every wheel of the extra plus the project's build backend, and installs in a checkout of the project with
(docs/install.md)::

    pip install --no-index --find-links WHEELHOUSE -e '.[gpu]'

:func:`resolve` is the dry run (package metadata only, no wheel downloaded; the test suite runs it for CPython 3.10,
3.11 and 3.12); :func:`build_wheelhouse` downloads.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import tomllib

from medvlthinker.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"
PYTHON_VERSIONS = ("3.10", "3.11", "3.12")
# every manylinux tag of x86-64 glibc Linux up to glibc 2.39 (the CUDA wheels use manylinux_2_28 and newer)
PLATFORMS = tuple(f"manylinux_2_{n}_x86_64" for n in range(5, 40)) + ("manylinux2014_x86_64", "manylinux1_x86_64",
                                                                       "linux_x86_64")


class WheelhouseError(UserError):
    """A requirement set that cannot become a wheelhouse; the message names the package and the fix."""


def gpu_requirements(python_version: str) -> list[str]:
    """What ``pip install -e '.[gpu]'`` asks for: the project's dependencies and its `gpu` extra (pyproject.toml),
    markers evaluated for ``python_version``.

    >>> reqs = gpu_requirements("3.10")
    >>> "accelerate==1.14.0" in reqs, "accelerate==1.15.0" in reqs, "vllm==0.24.0" in reqs, "click>=8.1" in reqs
    (True, False, True, True)
    """
    try:
        from packaging.requirements import Requirement
    except ImportError:  # a bare interpreter: pip carries its own copy
        from pip._vendor.packaging.requirements import Requirement

    project = tomllib.loads(PYPROJECT.read_text())["project"]
    extra = project["dependencies"] + project["optional-dependencies"]["gpu"]
    env = {"python_version": python_version, "python_full_version": python_version + ".0"}
    reqs = [Requirement(r) for r in extra]
    return [str(r).split(";")[0].strip() for r in reqs if r.marker is None or r.marker.evaluate(env)]


def target_args(python_version: str, platforms: tuple[str, ...] = PLATFORMS) -> list[str]:
    """pip's arguments that select wheels for another interpreter and platform (binary only, as pip requires)."""
    if python_version not in PYTHON_VERSIONS:
        raise WheelhouseError("--python_version", f"{python_version} is outside the project's range",
                              fix=f"choose one of {', '.join(PYTHON_VERSIONS)} (pyproject.toml requires-python)")
    return ["--only-binary=:all:", "--implementation", "cp", "--python-version", python_version,
            *[a for p in platforms for a in ("--platform", p)]]


_NO_DISTRIBUTION = re.compile(r"No matching distribution found for (\S+)")


def _pip(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)


def _build_pure_wheel(requirement: str, dest: Path) -> Path:
    """``requirement`` built from its source archive into ``dest``; only a pure-Python wheel is accepted, since a
    compiled one built here would be for this machine, not the target."""
    before = set(dest.glob("*.whl"))
    built = _pip(["wheel", "--no-deps", "--no-binary", ":all:", "-w", str(dest), requirement])
    new = sorted(set(dest.glob("*.whl")) - before)
    if built.returncode or not new:
        raise WheelhouseError(requirement, f"has no wheel for the target and its source does not build here "
                              f"({_last_line(built.stderr)})", fix="build its wheel on a node of the target platform "
                              "and put it in the wheelhouse")
    if not new[0].name.endswith("-none-any.whl"):
        new[0].unlink()
        raise WheelhouseError(requirement, f"has no wheel for the target and compiles ({new[0].name})",
                              fix="build its wheel on a node of the target platform and put it in the wheelhouse")
    return new[0]


def resolve(python_version: str, *, platforms: tuple[str, ...] = PLATFORMS, requirements: list[str] | None = None,
            wheelhouse: Path | None = None, build_source_only: bool = False) -> dict:
    """pip's resolution of ``requirements`` (default: the gpu extra) for the target, as a dry run: package metadata
    only. Returns ``{"packages": {name: version}, "sources": {name: url}, "built": [wheel names]}``.

    A requirement with no wheel for the target fails the resolution, naming it; with ``build_source_only`` it is
    built into ``wheelhouse`` (pure Python only) and the resolution runs again with that folder as a source.
    """
    requirements = gpu_requirements(python_version) if requirements is None else requirements
    built: list[str] = []
    with tempfile.TemporaryDirectory(prefix="wheelhouse-") as tmp:
        report = Path(tmp) / "report.json"
        while True:
            args = ["install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
                    "--target", str(Path(tmp) / "target"), *target_args(python_version, platforms)]
            if wheelhouse is not None and wheelhouse.is_dir():
                args += ["--find-links", str(wheelhouse)]
            proc = _pip(args + requirements)
            if proc.returncode == 0:
                break
            missing = _NO_DISTRIBUTION.search(proc.stderr)
            if missing and build_source_only and wheelhouse is not None and len(built) < 20:
                wheelhouse.mkdir(parents=True, exist_ok=True)
                built.append(_build_pure_wheel(missing.group(1), wheelhouse).name)
                continue
            if missing:
                raise WheelhouseError(missing.group(1), f"has no wheel for CPython {python_version} x86-64 on PyPI "
                                      "(source only, or no release for that Python)",
                                      fix="run scripts/make_wheelhouse.sh, which builds pure-Python ones, or pin "
                                      "a version with wheels in pyproject.toml [gpu]")
            errors = [line.strip() for line in proc.stderr.splitlines() if line.strip().startswith("ERROR")]
            raise WheelhouseError("pyproject.toml [gpu]", f"does not resolve for CPython {python_version} "
                                  f"({' '.join(errors[-2:]) or _last_line(proc.stderr)})",
                                  fix="relax or pin the conflicting requirements of the extra (or check the "
                                  "connection to PyPI)")
        items = json.loads(report.read_text())["install"]
    return {
        "packages": {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in items},
        "sources": {i["metadata"]["name"].lower(): i["download_info"]["url"] for i in items},
        "built": built,
    }


def not_wheels(resolution: dict) -> list[str]:
    """Packages of a resolution that would come as something other than a wheel (a source archive).

    >>> not_wheels({"sources": {"a": "https://x/a-1-py3-none-any.whl", "b": "https://x/b-1.tar.gz"}})
    ['b']
    """
    return sorted(name for name, url in resolution["sources"].items() if not url.split("#")[0].endswith(".whl"))


def build_wheelhouse(dest: str | Path, python_version: str, *, platforms: tuple[str, ...] = PLATFORMS,
                     requirements: list[str] | None = None) -> dict:
    """Download every wheel of the gpu extra for the target into ``dest`` (GBs: torch and the CUDA libraries),
    building pure-Python source-only ones, plus the project's build backend. Returns the resolution and the files."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    resolution = resolve(python_version, platforms=platforms, requirements=requirements, wheelhouse=dest,
                         build_source_only=True)
    pinned = [f"{name}=={version}" for name, version in sorted(resolution["packages"].items())]
    fetched = _pip(["download", "--no-deps", "--dest", str(dest), "--find-links", str(dest),
                    *target_args(python_version, platforms), *pinned])
    if fetched.returncode:
        raise WheelhouseError(str(dest), f"the download stopped ({_last_line(fetched.stderr)})",
                              fix="check the connection to PyPI and the free space, then run again (downloaded "
                              "wheels are kept)")
    # the build backend of the project's own editable install (pip builds it in isolation, from this folder)
    backend = _pip(["download", "--no-deps", "--dest", str(dest), *target_args(python_version, platforms),
                    *tomllib.loads(PYPROJECT.read_text())["build-system"]["requires"]])
    if backend.returncode:
        raise WheelhouseError(str(dest), f"the build backend did not download ({_last_line(backend.stderr)})",
                              fix="check the connection to PyPI, then run again")
    wheels = sorted(p.name for p in dest.glob("*.whl"))
    missing = [n for n in resolution["packages"]
               if not any(w.lower().replace("_", "-").startswith(n.replace("_", "-") + "-") for w in wheels)]
    if missing:
        raise WheelhouseError(str(dest), f"has no wheel of {', '.join(missing)} after the download",
                              fix="run again; if it persists, download those with pip download")
    return {**resolution, "wheels": wheels}


def install_command(wheelhouse: str | Path) -> str:
    """The command that installs the project (editable, run in its checkout) with the gpu extra from ``wheelhouse``
    alone."""
    return f"pip install --no-index --find-links {wheelhouse} -e '.[gpu]'"


def _last_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[-1][:300]


def main(argv: list[str] | None = None) -> None:
    import click

    from medvlthinker import cli

    @cli.command(context_settings={"show_default": True})
    @click.argument("dest", type=click.Path(file_okay=False))
    @click.option("--python_version", type=click.Choice(PYTHON_VERSIONS), default="3.12",
                  help="the CPython of the offline node")
    @click.option("--platform", "platforms", multiple=True, default=PLATFORMS, show_default=False,
                  help="wheel platform tags the node accepts (default: manylinux x86-64, glibc <= 2.39)")
    @click.option("--dry_run", is_flag=True, help="resolve and list the packages, download nothing")
    def command(dest, python_version, platforms, dry_run):
        """Download every wheel of the gpu extra for an offline node into DEST."""
        if dry_run:
            result = resolve(python_version, platforms=tuple(platforms))
            for name, version in sorted(result["packages"].items()):
                click.echo(f"{name}=={version}")
            click.echo(f"{len(result['packages'])} packages resolve for CPython {python_version}; not wheels: "
                       f"{', '.join(not_wheels(result)) or 'none'}")
            return
        result = build_wheelhouse(dest, python_version, platforms=tuple(platforms))
        click.echo(f"{len(result['wheels'])} wheels in {dest} for CPython {python_version} x86-64"
                   + (f" (built here: {', '.join(result['built'])})" if result["built"] else ""))
        click.echo(f"on the offline node, in a checkout of the project: {install_command(dest)}")

    command.main(argv, prog_name="make_wheelhouse.sh")


if __name__ == "__main__":
    main()
