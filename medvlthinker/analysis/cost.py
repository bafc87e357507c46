"""What a table row cost in device-hours: the eval runs' own records (``cost.json``, written by the runner) and the
RL run's verl timing metrics (docs/experiments.md, "What does a row cost?").

verl logs, at every step, ``timing_s/step`` (wall seconds of the step), ``perf/throughput`` (tokens a second per
GPU) and ``perf/total_num_tokens``; its printed config names ``trainer.n_gpus_per_node`` and ``trainer.nnodes``.
:func:`rl_timing` summarises them; device-hours of the RL run = the sum of the steps' seconds x GPUs / 3600.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from medvlthinker.analysis.demo_summary import step_metrics


def _config_int(log: str, key: str) -> int | None:
    found = re.findall(rf"['\"]{key}['\"]:\s*(\d+)", log)
    return int(found[-1]) if found else None


def rl_timing(log: str, devices: int | None = None) -> dict[str, Any]:
    """The timing summary of a verl console log: steps, mean and total seconds per step, mean tokens a second
    per device, devices (``devices``, else the config verl printed: n_gpus_per_node x nnodes) and device-hours.

    >>> log = ("'n_gpus_per_node': 8, 'nnodes': 1\\n"
    ...        "step:1 - timing_s/step:30.0 - perf/throughput:100.0\\nstep:2 - timing_s/step:10.0 - perf/throughput:300.0")
    >>> t = rl_timing(log)
    >>> t["steps"], t["seconds_per_step"], t["tokens_per_second_per_device"], t["devices"], round(t["device_hours"], 4)
    (2, 20.0, 200.0, 8, 0.0889)
    """
    steps = step_metrics(log)
    seconds = [m["timing_s/step"] for m in steps.values() if "timing_s/step" in m]
    rates = [m["perf/throughput"] for m in steps.values() if "perf/throughput" in m]
    if devices is None:
        per_node, nodes = _config_int(log, "n_gpus_per_node"), _config_int(log, "nnodes")
        devices = per_node * (nodes or 1) if per_node is not None else None
    total = math.fsum(seconds)
    return {
        "steps": len(seconds),
        "seconds": total,
        "seconds_per_step": total / len(seconds) if seconds else None,
        "tokens_per_second_per_device": math.fsum(rates) / len(rates) if rates else None,
        "devices": devices,
        "device_hours": total * devices / 3600 if devices is not None else None,
    }


def eval_device_hours(dirs: Sequence[str]) -> float | None:
    """Device-hours of a model's eval runs (their ``cost.json``), summed; None when a run has no cost file."""
    from medvlthinker.inference.cost import read_cost

    costs = [read_cost(d) for d in dirs]
    if not costs or any(c is None for c in costs):
        return None
    return math.fsum(c["device_hours"] for c in costs)


def cost_rows(models: Sequence[Any], rl_logs: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Per model of the table: its eval device-hours, its RL timing (``rl_logs``: model -> log file) and the total."""
    out: dict[str, dict[str, Any]] = {}
    for m in models:
        row: dict[str, Any] = {"eval_device_hours": eval_device_hours(m.dirs)}
        if rl_logs and m.name in rl_logs:
            with open(rl_logs[m.name], encoding="utf-8", errors="replace") as f:
                row["rl"] = rl_timing(f.read())
        parts = [row["eval_device_hours"], (row.get("rl") or {}).get("device_hours")]
        known = [p for p in parts if p is not None]
        row["device_hours"] = math.fsum(known) if known else None
        out[m.name] = row
    return out


def cost_markdown(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """The cost column as a Markdown table: eval and RL device-hours, seconds per RL step, tokens/s per device."""
    from medvlthinker.analysis.render import md_table

    def num(value, digits=3):
        return "—" if value is None else f"{value:.{digits}f}"

    lines = []
    for model, row in rows.items():
        rl = row.get("rl") or {}
        lines.append([model, num(row["eval_device_hours"]), num(rl.get("device_hours")),
                      num(rl.get("seconds_per_step"), 1), num(rl.get("tokens_per_second_per_device"), 1),
                      num(row["device_hours"])])
    return "\n".join(["## Cost (device-hours)", "",
                      "Eval: the runs' cost.json (wall seconds x devices); RL: verl's timing_s/step summed x GPUs.", "",
                      md_table(("Model", "eval", "RL", "RL s/step", "RL tokens/s/device", "total"), lines)])
