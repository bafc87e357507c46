"""A reduced `make demo`: the same script, every stage, on the transformers backend and a few rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_reduced_demo_runs_every_stage(tmp_path):
    out = tmp_path / "demo"
    env = dict(
        os.environ,
        PYTHON=sys.executable,
        DEMO_OUT=str(out),
        DEMO_BACKEND="hf",
        DEMO_ROWS_PER_BENCHMARK="2",
        DEMO_TRAIN_ROWS="6",
        DEMO_PASS_N="2",
        DEMO_SFT_STEPS="1",
        DEMO_MAX_TOKENS="8",
    )
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("=== [") == 11  # ten stages and "done"

    # pass-rate run: every training question sampled twice
    pass_records = [json.loads(x) for x in (out / "pass_rate/pmc_vqa/eval_results.jsonl").read_text().splitlines()]
    assert len(pass_records) == 6 and {r["num_rollouts"] for r in pass_records} == {2}

    import datasets
    import pyarrow.parquet as pq

    curated = datasets.load_from_disk(str(out / "data/curated_pmc_vqa"))
    assert len(curated) == 6
    assert list(curated["pass_count"]) == sorted(curated["pass_count"], reverse=True)  # easy to hard
    assert pq.read_table(out / "data/verl/train.parquet").num_rows == 6
    assert len(datasets.load_from_disk(str(out / "data/sft/pmc_vqa"))) == 6
    assert (out / "model/sft/model.safetensors").exists()

    for model in ("base", "sft"):
        acc = json.loads((out / f"eval/{model}/run1/accuracy.json").read_text())
        assert {k for k in acc if not k.startswith("_")} == {
            "pmc_vqa", "MMMU-medical", "MedXpertQA-MM", "pathvqa_closed", "slake_closed", "vqa_rad_closed"}
        assert all(v["rows"] == 2 for k, v in acc.items() if not k.startswith("_"))

    table = (out / "report/tables/table.md").read_text()
    assert "| base |" in table and "| sft |" in table
    html = (out / "report/report.html").read_text()
    assert "<table" in html and "data:image/png;base64," in html
    assert "open " + str(out / "report/report.html") in proc.stdout
