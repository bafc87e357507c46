"""What an eval run cost: ``cost.json`` in its output directory (docs/experiments.md, "What does a row cost?").

Each invocation of the runner adds one entry (a resumed run has several): its wall seconds from the start of
validation to the merge, the devices it held (engines x GPUs per engine, 0 for the api backend) and its backend.
The totals are the generated tokens of every record (the rollouts' ``output_tokens``), the wall seconds and the
device-hours (the sum over entries of seconds x devices / 3600).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

COST_FILE = "cost.json"


def run_devices(config) -> int:
    """The devices a run holds on this node (all of them for Ray): its engines times the GPUs of each."""
    if config.backend == "api":
        return 0
    return config.dp_size * config.tp_size


def cost_file(output_dir: str | os.PathLike, node_rank: int = 0, node_size: int = 1) -> Path:
    """``cost.json``, or ``cost-node{rank}.json`` when several nodes share the run."""
    name = COST_FILE if node_size == 1 else f"cost-node{node_rank}.json"
    return Path(output_dir) / name


def generated_tokens(output_dir: str | os.PathLike) -> int:
    """Output tokens of every record written so far (shards or eval_results.jsonl)."""
    from medvlthinker.inference.records import collect_records

    return sum(int(r.get("output_tokens") or 0) for rec in collect_records(output_dir) for r in rec["rollouts"])


def record_cost(config, seconds: float) -> dict[str, Any]:
    """Add this invocation's entry to the run's cost file and return the file's content."""
    from medvlthinker.staging import write_json

    path = cost_file(config.output_dir, config.node_rank, config.node_size)
    cost = json.loads(path.read_text()) if path.is_file() else {"invocations": []}
    cost["invocations"].append({"seconds": round(seconds, 3), "devices": run_devices(config),
                                "backend": config.backend})
    cost["wall_seconds"] = round(math.fsum(i["seconds"] for i in cost["invocations"]), 3)
    cost["device_hours"] = math.fsum(i["seconds"] * i["devices"] for i in cost["invocations"]) / 3600
    cost["generated_tokens"] = generated_tokens(config.output_dir)
    write_json(path, cost)
    return cost


def read_cost(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The totals of a run directory's cost files (every node's), or None when it has none.

    >>> read_cost("/nonexistent") is None
    True
    """
    run = Path(run_dir)
    files = sorted(run.glob("cost*.json")) if run.is_dir() else []
    if not files:
        return None
    parts = [json.loads(p.read_text()) for p in files]
    return {"wall_seconds": max(p["wall_seconds"] for p in parts),
            "device_hours": math.fsum(p["device_hours"] for p in parts),
            "generated_tokens": max(p["generated_tokens"] for p in parts),
            "devices": max((i["devices"] for p in parts for i in p["invocations"]), default=0)}
