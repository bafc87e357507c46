"""The RL reward (docs/protocol.md section 4): verl's custom reward function.

Configure it in verl 0.9 as ``reward.custom_reward_function.path=<this file>`` and
``reward.custom_reward_function.name=compute_score`` (the old top-level ``custom_reward_function`` key is
silently ignored there). For the multi-line fix use ``name=compute_score_multiline_fix``, or keep
``compute_score`` and set ``reward.custom_reward_function.reward_kwargs.multiline_fix=true``.

Score 1.0 when the response is exactly ``<think>...</think>`` + optional whitespace + ``<answer>...</answer>``
and the answer grades correct; 0.0 otherwise (no partial format credit).

>>> info = {"answer": "No", "answer_label": "B"}
>>> compute_score("pmc_vqa", "<think>dark</think>\\n<answer> B </answer>", "No", info)
1.0
>>> compute_score("pmc_vqa", "<answer>B</answer>", "No", info)  # no think block
0.0
>>> compute_score("pmc_vqa", "<think>dark</think><answer>\\nB\\n</answer>", "No", info)  # the quirk
0.0
>>> compute_score_multiline_fix("pmc_vqa", "<think>dark</think><answer>\\nB\\n</answer>", "No", info)
1.0
"""

from __future__ import annotations

import re
from typing import Any

# verl imports this file by path (importlib spec_from_file_location), not as part of the package, so a relative
# import would fail; the package is installed in the training environment. The fallback covers a checkout used
# without installing (this file lives in <repo>/medvlthinker/).
try:
    from medvlthinker.grading import grade_answer
except ImportError:  # pragma: no cover - exercised only in an environment without the package installed
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from medvlthinker.grading import grade_answer

FORMAT_PATTERN = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
# Quirk of the original: no DOTALL here, so an answer body spanning lines does not match and the whole response
# is graded instead, which scores 0. Kept by default so the reward equals the one the paper trained with.
ANSWER_PATTERN = re.compile(r"<answer>(.*?)</answer>")
ANSWER_PATTERN_MULTILINE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def format_ok(solution_str: str) -> bool:
    """The format gate: the whole response is one think block, optional whitespace, one answer block.

    >>> format_ok("<think>a</think> <answer>B</answer>"), format_ok("<think>a</think><answer>B</answer>\\n")
    (True, False)
    """
    return FORMAT_PATTERN.fullmatch(solution_str) is not None


def extract_reward_answer(solution_str: str, multiline_fix: bool = False) -> str:
    """The answer the reward grades: the FIRST ``<answer>`` body, stripped, else the whole response stripped."""
    pattern = ANSWER_PATTERN_MULTILINE if multiline_fix else ANSWER_PATTERN
    match = pattern.search(solution_str)
    return (match.group(1) if match else solution_str).strip()


def compute_score(
    data_source: Any,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict[str, Any] | None = None,
    *,
    multiline_fix: bool = False,
    **kwargs: Any,
) -> float:
    """verl custom reward: 1.0 for a well-formatted, correct response, else 0.0.

    ``extra_info`` must carry ``answer`` (the option text, equal to ``ground_truth``) and ``answer_label``
    (the letter). Raises ValueError when they are missing or ``extra_info["answer"] != ground_truth``, as the
    original does: that means the RL parquet was built wrong. ``data_source`` and extra keyword arguments
    from verl are accepted and ignored. ``multiline_fix=True`` lets the answer body span lines (opt-in fix of
    the quirk; not what the paper trained with).
    """
    if not extra_info or "answer" not in extra_info or "answer_label" not in extra_info:
        raise ValueError(
            f"reward needs extra_info with 'answer' and 'answer_label' (data_source={data_source!r}, "
            f"got keys {sorted(extra_info) if extra_info else None}); rebuild the RL parquet with "
            f"medvlthinker's converter, which stores both"
        )
    if extra_info["answer"] != ground_truth:
        raise ValueError(
            f"extra_info['answer'] {extra_info['answer']!r} != ground_truth {ground_truth!r} "
            f"(data_source={data_source!r}, index={extra_info.get('index', extra_info.get('dataset_index'))!r}); "
            f"the RL parquet's reward_model.ground_truth must be the answer text"
        )
    if not format_ok(solution_str):
        return 0.0
    prediction = extract_reward_answer(solution_str, multiline_fix=multiline_fix)
    correct = grade_answer(prediction, extra_info["answer"], extra_info["answer_label"])
    return 1.0 if correct else 0.0


def compute_score_multiline_fix(
    data_source: Any,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict[str, Any] | None = None,
    **kwargs: Any,
) -> float:
    """:func:`compute_score` with the multi-line fix: the answer body may span lines (dot matches newline)."""
    kwargs.pop("multiline_fix", None)
    return compute_score(data_source, solution_str, ground_truth, extra_info, multiline_fix=True, **kwargs)
