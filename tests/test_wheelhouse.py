"""The wheelhouse of the `gpu` extra (scripts/make_wheelhouse.sh): pip's resolution for CPython 3.10, 3.11 and 3.12
on x86-64 Linux, wheels only, as a dry run (package metadata from PyPI, no wheel downloaded)."""

from __future__ import annotations

import socket

import pytest

from medvlthinker.cluster.wheelhouse import (
    PYTHON_VERSIONS,
    WheelhouseError,
    build_wheelhouse,
    gpu_requirements,
    not_wheels,
    resolve,
    target_args,
)


def pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


needs_pypi = pytest.mark.skipif(not pypi_reachable(), reason="PyPI is not reachable: the wheelhouse resolution "
                                "reads package metadata from it")


@pytest.fixture(scope="module")
def resolutions():
    """The three resolutions at once: each spends most of its ~2 minutes waiting on PyPI."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(PYTHON_VERSIONS)) as pool:
        futures = {version: pool.submit(resolve, version) for version in PYTHON_VERSIONS}
    return {version: future.result() for version, future in futures.items()}


@needs_pypi
@pytest.mark.network
@pytest.mark.slow
@pytest.mark.parametrize("python_version", PYTHON_VERSIONS)
def test_the_gpu_extra_resolves_to_wheels_for_cpython_x86_64(python_version, resolutions):
    result = resolutions[python_version]
    packages = result["packages"]
    assert not_wheels(result) == [] and result["built"] == []
    # every pin of the extra is what resolves, the CUDA build of torch with its CUDA libraries
    for requirement in gpu_requirements(python_version):
        if "==" in requirement:
            name, version = requirement.split("==")
            assert packages[name.split("[")[0].lower()] == version, requirement
    assert any(name.startswith("nvidia-") for name in packages)
    tag = "cp" + python_version.replace(".", "")
    for name, url in result["sources"].items():
        wheel = url.rsplit("/", 1)[-1]
        assert "x86_64" in wheel or wheel.endswith("-any.whl"), (name, wheel)
        python_tag = wheel[:-4].split("-")[-3]
        assert tag in python_tag or python_tag.startswith(("py3", "py2.py3", "cp3")), (name, wheel)
        if wheel.split("-")[-2] not in ("none", "abi3"):
            assert python_tag == tag, (name, wheel)  # a compiled wheel for that very CPython


@needs_pypi
@pytest.mark.network
@pytest.mark.slow
def test_a_wheelhouse_for_another_python_builds_pure_source_only_packages(tmp_path):
    # pylatexenc 2.10 exists on PyPI as a source archive only; PyYAML is compiled, one wheel per CPython
    with pytest.raises(WheelhouseError, match=r"^pylatexenc==2.10: has no wheel for CPython 3.10 x86-64 on PyPI"):
        resolve("3.10", requirements=["pylatexenc==2.10"])
    result = build_wheelhouse(tmp_path, "3.10", requirements=["pylatexenc==2.10", "pyyaml==6.0.2"])
    assert result["built"] == ["pylatexenc-2.10-py3-none-any.whl"]
    assert result["packages"] == {"pylatexenc": "2.10", "pyyaml": "6.0.2"}
    wheels = sorted(p.name for p in tmp_path.glob("*.whl"))
    assert wheels == result["wheels"]
    assert any(w.startswith("PyYAML-6.0.2-cp310-cp310-manylinux") for w in wheels), wheels  # for 3.10, not this one
    assert any(w.startswith("setuptools-") for w in wheels), wheels  # the backend of the editable install


def test_a_python_outside_the_projects_range_is_one_line():
    with pytest.raises(WheelhouseError, match=r"^--python_version: 3.13 is outside the project's range; fix: "
                                              r"choose one of 3.10, 3.11, 3.12"):
        target_args("3.13")
