"""Whether a node can run the recipe: five short runs of the cluster's code paths, each with figures and pass/fail.

    bash scripts/cluster_check.sh [--profile gpu|cpu] [--skip PART ...] [--out DIR]

The ``gpu`` profile (the default) runs on one node with at least one GPU, offline, on the real Qwen2.5-VL-3B
architecture with random weights (``configs/models/qwen2.5-vl-3b`` and the Qwen2.5 tokenizer built offline); the
``cpu`` profile runs the same parts on the tiny random model with vLLM's CPU build, verl's CPU profile and TRL (the
test suite runs it). The parts, in order (docs/performance.md says how to read each figure):

1. ``eval_runner``: the eval runner against raw ``LLM.generate`` on the same image requests with a fixed output
   length, interleaved repetitions: output tokens/s of each and the median ratio.
2. ``pass_rate``: the same comparison in pass-rate mode (n=16 samples a question).
3. ``grpo``: two GRPO steps of the paper's 3B config through ``train/rl/train.sh`` with a check-sized overlay:
   seconds per step, tokens/s per GPU, verl's rollout/actor probability difference.
4. ``sft``: ten SFT steps of the paper's 3B SFT config (shortened) with TRL: tokens/s and model FLOPs utilisation.
5. ``merge``: the merge of the GRPO checkpoint (``train/merge.sh verl``), then load and generate.

Each part runs in its own process (a crash or an out-of-memory kill of one leaves the others running, and each
starts with the whole GPU), except parts 1 and 2, which share one vLLM engine; the logs go to ``OUT/logs/``. A part whose prerequisite is missing (no GPU,
no flash-attn for the paper's remove-padding, a vLLM that does not import, no GRPO checkpoint to merge) fails with
one line naming it. The figures, the pass/fail of each part and the versions it ran with are printed as one JSON
document and written to ``OUT/cluster_check.json`` beside ``OUT/cluster_check.md``, a readable summary.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from medvlthinker import cli
from medvlthinker.cluster.parts import PART_FUNCTIONS, Context, last_error
from medvlthinker.cluster.stack import PARTS, PROCESSES, PROFILES, ROOT, Profile, gpu_problem, machine, versions
from medvlthinker.errors import UserError


def run_part(name: str, ctx: Context, result_path: Path) -> None:
    """Run one part in this process and write its result (``status``, ``cause``, ``figures``, ``seconds``)."""
    from medvlthinker.staging import write_json

    started = time.perf_counter()
    try:
        figures = PART_FUNCTIONS[name](ctx)
        result = {"status": "pass", "cause": None, "figures": figures}
    except UserError as exc:
        result = {"status": "fail", "cause": cli.one_line(exc), "figures": None}
    except BaseException as exc:  # a bug or a library's error: its traceback goes to the part's log
        traceback.print_exc()
        result = {"status": "fail", "cause": f"{type(exc).__name__}: {cli.one_line(exc)}"[:500], "figures": None}
    result["seconds"] = time.perf_counter() - started
    write_json(result_path, result)


# ---------------------------------------------------------------- the driver


def result_path(work: Path, name: str) -> Path:
    return work / f"{name}.result.json"


def _launch(names: list[str], ctx: Context, logs: Path) -> dict[str, dict[str, Any]]:
    """Run ``names`` in one process (parts 1 and 2 share its vLLM engine); one result each."""
    for name in names:
        result_path(ctx.work, name).unlink(missing_ok=True)
    log = logs / f"{'+'.join(names)}.log"
    cmd = [sys.executable, "-m", "medvlthinker.cluster.cluster_check", "--profile", ctx.profile.name, "--part",
           ",".join(names), "--work", str(ctx.work)] + ([] if ctx.remove_padding else ["--no_remove_padding"]) \
        + [a for o in ctx.rl_overrides for a in ("--rl_override", o)]
    timeout = ctx.profile.part_timeout_s * len(names)
    with log.open("w") as fh:
        try:
            rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = None
    results = {}
    for name in names:
        if result_path(ctx.work, name).is_file():
            result = json.loads(result_path(ctx.work, name).read_text())
        elif rc is None:
            result = {"status": "fail", "cause": f"did not finish within {timeout} s; see {log}", "figures": None,
                      "seconds": None}
        else:
            last = last_error(log.read_text(errors="replace"))
            result = {"status": "fail", "cause": f"its process ended with exit code {rc} and no result ({last}); "
                      f"see {log}", "figures": None, "seconds": None}
        result["log"] = str(log)
        results[name] = result
    return results


def run_check(profile: Profile, out: Path, *, skip: set[str] = frozenset(), remove_padding: bool = True,
              rl_overrides: tuple[str, ...] = (), keep_work: bool = False,
              echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every part not in ``skip``, one process each, and write ``out/cluster_check.{json,md}``."""
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    ctx = Context(profile=profile, work=out / "work", remove_padding=remove_padding, rl_overrides=rl_overrides)
    if ctx.work.exists():
        shutil.rmtree(ctx.work)
    ctx.work.mkdir()
    doc: dict[str, Any] = {
        "profile": profile.name,
        "started": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "versions": versions(),
        "settings": {k: v for k, v in asdict(profile).items() if k not in ("name", "sft_overrides")},
        "parts": {},
    }
    started = time.perf_counter()
    no_gpu = gpu_problem(profile)  # every part needs it: said once, without starting a process a part
    for group in PROCESSES:
        names = [name for name in group if name not in skip]
        for name in group:
            if name in skip:
                doc["parts"][name] = {"status": "skipped", "cause": "--skip", "figures": None}
            elif no_gpu:
                doc["parts"][name] = {"status": "fail", "cause": no_gpu, "figures": None, "seconds": None}
                echo(f"[cluster check] {name}: fail: {no_gpu}")
        if not names or no_gpu:
            continue
        echo(f"[cluster check] {', '.join(names)} ...")
        for name, result in _launch(names, ctx, logs).items():
            doc["parts"][name] = result
            took = f" ({result['seconds']:.0f} s)" if result["seconds"] is not None else ""
            echo(f"[cluster check] {name}: {result['status']}{took}" + (f": {result['cause']}" if result["cause"] else ""))
    doc["parts"] = {name: doc["parts"][name] for name in PARTS}
    doc["seconds"] = time.perf_counter() - started
    doc["passed"] = all(p["status"] != "fail" for p in doc["parts"].values())
    if not keep_work:
        shutil.rmtree(ctx.work, ignore_errors=True)
    from medvlthinker.staging import write_json, write_text

    write_json(out / "cluster_check.json", doc)
    write_text(out / "cluster_check.md", summary(doc))
    return doc


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1 else f"{value:,.{digits}f}"
    return str(value)


def summary(doc: dict[str, Any]) -> str:
    """The readable summary of a check's JSON document (Markdown)."""
    v = doc["versions"]
    lines = [f"# Cluster check ({doc['profile']} profile), {doc['started']}", "",
             f"Machine: {doc['machine']['host']}, {doc['machine']['cpu']} ({doc['machine']['cpu_cores']} cores), "
             f"GPU: {v['gpu'] or 'none'}" + (f" x {v['gpu_count']}" if v["gpu_count"] else ""), "",
             "Versions: " + ", ".join(f"{k} {v[k] or '-'}" for k in ("python", "torch", "cuda", "vllm", "verl",
                                                                     "transformers", "trl", "flash_attn")), "",
             f"Result: {'PASS' if doc['passed'] else 'FAIL'} in {doc['seconds']:.0f} s", "",
             "| part | result | seconds | figures |", "|---|---|---|---|"]
    for name, part in doc["parts"].items():
        f = part.get("figures") or {}
        if part["status"] != "pass":
            text = part.get("cause") or ""
        elif name in ("eval_runner", "pass_rate"):
            text = (f"raw {_fmt(f['raw_tokens_per_s'])} tok/s, runner {_fmt(f['runner_tokens_per_s'])} tok/s, "
                    f"ratio {f['ratio']:.3f}" + (f" (goal >= {f['goal']}: {_fmt(f['goal_met'])})" if "goal" in f else ""))
        elif name == "grpo":
            text = (f"{_fmt(f['seconds_per_step'])} s/step, {_fmt(f['tokens_per_s_per_gpu'])} tok/s/GPU, rollout/actor "
                    f"prob diff max {_fmt(f['rollout_probs_diff_max'])}, mean {_fmt(f['rollout_probs_diff_mean'])}")
        elif name == "sft":
            text = (f"{_fmt(f['tokens_per_s'])} tok/s, {_fmt(f['seconds_per_step'])} s/step, MFU "
                    + (f"{100 * f['mfu']:.1f}%" if f["mfu"] is not None else "- (no known peak)"))
        else:
            text = f"generated {f['generated']}"
        seconds = part.get("seconds")
        lines.append(f"| {name} | {part['status']} | {_fmt(seconds, 0) if seconds is not None else '-'} | "
                     f"{text.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def _parse_skip(values: tuple[str, ...]) -> set[str]:
    names = {n.strip() for v in values for n in v.split(",") if n.strip()}
    unknown = sorted(names - set(PARTS))
    if unknown:
        raise UserError("--skip", f"unknown part {', '.join(unknown)}", fix=f"name parts of {', '.join(PARTS)}")
    return names


@cli.command(context_settings={"show_default": True})
@click.option("--profile", "profile_name", type=click.Choice(sorted(PROFILES)), default="gpu",
              help="gpu: the 3B architecture on this node's GPUs; cpu: the tiny model on the CPU (the test suite)")
@click.option("--skip", multiple=True, help=f"parts to leave out (repeat or comma-separate): {', '.join(PARTS)}")
@click.option("--out", type=click.Path(file_okay=False), default="outputs/cluster_check",
              help="cluster_check.json, cluster_check.md and logs/ go here")
@click.option("--no_remove_padding", is_flag=True,
              help="GRPO without the paper's remove-padding (SDPA attention), for a node without flash-attn")
@click.option("--rl_override", "rl_overrides", multiple=True,
              help="a Hydra override (key=value) for the grpo part, after the check's own (repeat)")
@click.option("--keep_work", is_flag=True, help="keep OUT/work (the model, checkpoints and data of the parts)")
@click.option("--part", default=None, hidden=True)
@click.option("--work", type=click.Path(file_okay=False), default=None, hidden=True)
def main(profile_name, skip, out, no_remove_padding, rl_overrides, keep_work, part, work):
    """Run the cluster check and print its JSON document."""
    for key, value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                       "WANDB_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "TOKENIZERS_PARALLELISM": "false",
                       "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_USE_FLASHINFER_SAMPLER": "0",
                       "VLLM_CPU_KVCACHE_SPACE": "1"}.items():
        os.environ.setdefault(key, value)
    profile = PROFILES[profile_name]
    if part is not None:
        ctx = Context(profile=profile, work=Path(work), remove_padding=not no_remove_padding,
                      rl_overrides=tuple(rl_overrides))
        for name in part.split(","):
            run_part(name, ctx, result_path(ctx.work, name))
        return
    doc = run_check(profile, Path(out), skip=_parse_skip(skip), remove_padding=not no_remove_padding,
                    rl_overrides=tuple(rl_overrides), keep_work=keep_work, echo=lambda line: click.echo(line, err=True))
    click.echo(json.dumps(doc, indent=2))
    click.echo(f"written: {Path(out) / 'cluster_check.json'}, {Path(out) / 'cluster_check.md'}", err=True)
    if not doc["passed"]:
        sys.exit(1)


if __name__ == "__main__":
    main(prog_name="cluster_check.sh")
