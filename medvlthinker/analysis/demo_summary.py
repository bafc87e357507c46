"""What the demo's numbers say: format rate and accuracy per model, the RL reward curve, the pass-count histogram.

The format rate is the share of greedy outputs the RL reward accepts as formatted (``<think>...</think>`` then
``<answer>...</answer>``, :data:`medvlthinker.reward.FORMAT_PATTERN`); the accuracy is the share graded correct
by the strict grader that generation records (docs/protocol.md section 3). The reward curve comes from verl's
console logger, whose lines read ``step:N - key:value - ...`` (``critic/score/mean`` is the mean reward).

    python -m medvlthinker.analysis.demo_summary OUT_DIR --model base --model sft --model rl
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

REWARD_KEY = "critic/score/mean"


def step_metrics(log: str) -> dict[int, dict[str, float]]:
    """verl's console logger lines ``step:N - key:value - ...`` as numbers (non-numeric values are skipped).

    >>> step_metrics("(TaskRunner pid=1) step:2 - critic/score/mean:np.float64(0.25) - timing_s/gen:1.5 - x:abc")
    {2: {'critic/score/mean': 0.25, 'timing_s/gen': 1.5}}
    """
    steps = {}
    for line in log.splitlines():
        m = re.search(r"step:(\d+) - (.*)$", line)
        if not m:
            continue
        metrics = {}
        for item in m.group(2).split(" - "):
            key, _, value = item.partition(":")
            value = re.sub(r"^np\.\w+\((.*)\)$", r"\1", value.strip())
            try:
                metrics[key.strip()] = float(value)
            except ValueError:
                continue
        steps[int(m.group(1))] = metrics
    return steps


def reward_curve(log: str, key: str = REWARD_KEY) -> list[tuple[int, float]]:
    """``(step, mean reward)`` in step order from a verl console log."""
    return [(step, m[key]) for step, m in sorted(step_metrics(log).items()) if key in m]


def is_formatted(text: str | None) -> bool:
    """Whether the RL reward's format rule accepts ``text``.

    >>> is_formatted("<think> red </think>\\n<answer> A </answer>"), is_formatted("A")
    (True, False)
    """
    from medvlthinker.reward import FORMAT_PATTERN

    return bool(text) and FORMAT_PATTERN.fullmatch(text.strip()) is not None


def model_scores(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Rows, format rate and accuracy (first rollout of each record), overall and per benchmark."""
    per: dict[str, list[tuple[bool, bool]]] = {}
    for record in records:
        rollout = record["rollouts"][0]
        per.setdefault(record["dataset_name"], []).append(
            (is_formatted(rollout.get("output_text")), bool(rollout.get("is_correct"))))

    def score(pairs: Sequence[tuple[bool, bool]]) -> dict[str, float]:
        n = len(pairs)
        return {"rows": n, "format_rate": sum(f for f, _ in pairs) / n if n else 0.0,
                "accuracy": sum(c for _, c in pairs) / n if n else 0.0}

    everything = [p for pairs in per.values() for p in pairs]
    return {**score(everything), "per_benchmark": {name: score(pairs) for name, pairs in per.items()}}


def constant_letter_accuracy(records: Iterable[Mapping[str, Any]]) -> float:
    """The best accuracy a model that gives one letter to every question can reach on these rows (the chance
    level a table row has to beat); a row's answer is its option letter, so this is the largest letter share.

    >>> constant_letter_accuracy([{"answer_label": "A"}, {"answer_label": "B"}, {"answer_label": "A"}])
    0.6666666666666666
    """
    labels = [record["answer_label"] for record in records]
    return max(labels.count(label) for label in set(labels)) / len(labels) if labels else 0.0


def pass_count_histogram(pass_rate_dir: str | os.PathLike, rollouts: int) -> list[int]:
    """How many training questions had 0, 1, ..., ``rollouts`` correct samples."""
    from medvlthinker.curate import curation

    counts = curation.load_pass_counts(pass_rate_dir, expected_rollouts=rollouts)
    histogram = [0] * (rollouts + 1)
    for _, count in counts.values():
        histogram[count] += 1
    return histogram


def summarize(out_dir: str | os.PathLike, models: Sequence[str], *, pass_rollouts: int,
              rl_log: str | os.PathLike | None = None) -> dict[str, Any]:
    """The demo's numbers from its output directory (``eval/MODEL/run1``, ``pass_rate/pmc_vqa``, the RL log)."""
    from medvlthinker.inference.records import collect_records

    out = Path(out_dir)
    summary: dict[str, Any] = {"models": {}, "pass_rollouts": pass_rollouts}
    for model in models:
        records = collect_records(out / "eval" / model / "run1")
        summary["models"][model] = model_scores(records)
        summary.setdefault("constant_letter_accuracy", constant_letter_accuracy(records))
    summary["pass_count_histogram"] = pass_count_histogram(out / "pass_rate" / "pmc_vqa", pass_rollouts)
    if rl_log is not None and Path(rl_log).exists():
        summary["reward_curve"] = reward_curve(Path(rl_log).read_text(errors="replace"))
    return summary


def describe(summary: Mapping[str, Any]) -> str:
    """The closing words of the demo: the table of format rate and accuracy, and what the numbers mean."""
    lines = ["model   format rate   accuracy   (greedy, all six synthetic benchmarks)"]
    for model, s in summary["models"].items():
        lines.append(f"{model:<7} {100 * s['format_rate']:>10.1f}%  {100 * s['accuracy']:>8.1f}%   ({s['rows']} rows)")
    if "constant_letter_accuracy" in summary:
        lines.append(f"one letter for every question (chance) {100 * summary['constant_letter_accuracy']:.1f}%: "
                     "the evaluation answers are balanced (medvlthinker.demo.demo_task)")
    hist = summary["pass_count_histogram"]
    n = summary["pass_rollouts"]
    middle = sum(hist[1:n])
    lines.append(f"pass counts of the training questions (0..{n} correct of {n} samples): {hist}; "
                 f"{middle} of {sum(hist)} in the middle band 1..{n - 1}")
    curve = summary.get("reward_curve") or []
    if curve:
        lines.append(f"RL mean reward: step {curve[0][0]} {curve[0][1]:.3f} -> step {curve[-1][0]} {curve[-1][1]:.3f}")
    lines += [
        "",
        "What this shows: a synthetic task (colour and number of drawn figures; yes/no colour questions), not the",
        "paper's benchmarks, on a 2-layer Qwen2.5-VL trained for minutes on a CPU. The base is the random model",
        "warm-started on picture captions and text-only questions: it can describe a picture and answer a text",
        "question, but has never answered a question about a picture. SFT on the image questions teaches the format",
        "(format rate) and to name the colour it sees, and it gives the matching option letter more often than the",
        "base (accuracy above chance), though far from always; the number of figures and the yes/no comparison stay",
        "near chance in the demo's minutes. The pass counts are those of the SFT model, which RL starts from; GRPO",
        "trains on questions of the middle band, where a group of answers has both right and wrong ones.",
        _rl_words(summary),
    ]
    return "\n".join(lines)


def _rl_words(summary: Mapping[str, Any]) -> str:
    curve = summary.get("reward_curve") or []
    if len(curve) < 2:
        return "The RL log has fewer than two steps, so there is no reward trend to read."
    first, last = curve[0][1], curve[-1][1]
    direction = "rose" if last > first else "fell"
    trend = f"stayed at {first:.2f}" if last == first else f"{direction} from {first:.2f} to {last:.2f}"
    words = (f"GRPO's mean reward (format and correct option, the paper's reward) {trend} over {len(curve)} steps "
             "(each step an epoch over the same questions, so the curve is what GRPO learnt on them).")
    return " ".join(filter(None, (words, _held_out_words(summary))))


def _held_out_words(summary: Mapping[str, Any]) -> str:
    """What the RL row says next to SFT's: the held-out rows are not the questions GRPO trained on."""
    models = summary["models"]
    if not {"sft", "rl"} <= set(models):
        return ""
    sft, rl = 100 * models["sft"]["accuracy"], 100 * models["rl"]["accuracy"]
    chance = summary.get("constant_letter_accuracy")
    below_chance = " (below chance)" if chance is not None and rl < 100 * chance else ""
    if rl >= sft:
        return f"On the held-out evaluation rows RL scores {rl:.1f}% against SFT's {sft:.1f}%."
    return (f"On the held-out evaluation rows RL scores {rl:.1f}%{below_chance} against SFT's {sft:.1f}%: epochs "
            "over a few questions fit those questions, not the task, and RL's held-out accuracy varies widely "
            'from run to run (docs/demo.md, "What the RL row does and does not show").')


def main(argv: list[str] | None = None) -> None:
    """Write OUT_DIR/summary.json and print the summary."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("out_dir")
    ap.add_argument("--model", action="append", required=True, help="an eval under OUT_DIR/eval/MODEL/run1")
    ap.add_argument("--pass_rollouts", type=int, required=True)
    ap.add_argument("--rl_log", default=None, help="verl's console log of the RL stage")
    args = ap.parse_args(argv)
    summary = summarize(args.out_dir, args.model, pass_rollouts=args.pass_rollouts, rl_log=args.rl_log)
    Path(args.out_dir, "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(describe(summary))


if __name__ == "__main__":
    main()
