"""The Ray actor pool on CPU: two local workers on the transformers backend produce the same records as one
engine, a run killed midway resumes without duplicates, and a Hub token in the environment reaches no file of
Ray's session folder or of the run."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from medvlthinker.data import to_dataset
from medvlthinker.demo import synthetic
from medvlthinker.inference import RunConfig, run
from medvlthinker.inference.records import read_records, shard_files

SCRIPT = Path(__file__).resolve().parent.parent / "eval" / "run_offline_inference.py"
ROWS = 24
MAX_TOKENS = 32


def _lines(out: Path) -> int:
    return sum(p.read_text().count("\n") for p in shard_files(out))


@pytest.mark.slow
def test_ray_pool_matches_one_engine_and_resumes_after_a_kill(tmp_path, tiny_model_dir):
    rows = synthetic.make_image_rows(n=ROWS, seed=5, image_size=(56, 56))
    to_dataset(rows).save_to_disk(str(tmp_path / "data"))
    # greedy, one prompt per generate call: each answer depends on its row alone, whichever engine runs it
    common = dict(model=str(tiny_model_dir), backend="hf", dataset_name=str(tmp_path / "data"),
                  max_tokens=MAX_TOKENS, batch_size=1, max_pixels=64 * 28 * 28)
    run(RunConfig(output_dir=str(tmp_path / "one"), progress=False, **common))
    reference = read_records(tmp_path / "one" / "eval_results.jsonl")

    out = tmp_path / "ray"
    cmd = [sys.executable, str(SCRIPT), "--ray", "--dp_size", "2", "--output_dir", str(out),
           *[f"--{k}={v}" for k, v in common.items()]]
    token = f"hf_{secrets.token_hex(16)}"
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must stay under 108 bytes
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_TOKEN=token, RAY_TMPDIR=ray_tmp)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # the local Ray cluster joins this process group
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and _lines(out) < 3:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    partial = {p.name: p.read_text() for p in shard_files(out)}
    assert 3 <= _lines(out) < ROWS, "the run must be killed midway"
    torn = sorted(partial)[0]
    with (out / torn).open("a") as fh:  # a torn write, as a kill inside write() would leave
        fh.write('{"dataset_name": "pmc_vqa", "dataset_ind')

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    per_worker = {p.name: [r["dataset_index"] for r in read_records(p)] for p in shard_files(out)}
    assert sorted(per_worker) == ["shard-000-of-002.jsonl", "shard-001-of-002.jsonl"]
    assert all(per_worker.values()), "both workers generated rows"
    indices = [i for idx in per_worker.values() for i in idx]
    assert sorted(indices) == list(range(ROWS))  # every row once: nothing lost, nothing generated twice
    for name, text in partial.items():  # the records written before the kill were kept as they were
        assert (out / name).read_text().startswith(text)
    assert read_records(out / "eval_results.jsonl") == reference

    # Ray writes a runtime environment in clear into its session logs; the token must be in none of its files
    files = [p for root in (Path(ray_tmp), out) for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    assert any(p.name == "runtime_env_agent.log" for p in files), "the check must see Ray's session logs"
    leaked = [str(p) for p in files if token.encode() in p.read_bytes()]
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert not leaked, leaked
