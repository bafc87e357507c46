"""Test-only reward: the project's reward, plus a deterministic spread for completions without an answer tag.

A random model never writes an answer, so the paper's reward gives every rollout 0, every GRPO advantage is 0 and
the actor never moves. The spread (the completion's CRC-32 mod 997, in 997ths) gives the rollouts of one prompt
different rewards unless they wrote the same text. One row, the first PMC-VQA row of the test data
(:data:`SAME_REWARD`), gets 0.5 for every rollout instead: a group of equal rewards, which online filtering must
drop. Completions with an answer tag keep the paper's 0/1 score, so the RL preflight's reward checks still pass on
this module.
"""

import zlib

from medvlthinker.reward import compute_score as paper_score

SAME_REWARD = ("pmc_vqa", 0)
"""(dataset_name, dataset_index) of the row whose rollouts all score the same."""


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    score = float(paper_score(data_source, solution_str, ground_truth, extra_info))
    if "<answer>" in solution_str:
        return score
    info = extra_info or {}
    if (info.get("dataset_name"), info.get("dataset_index")) == SAME_REWARD:
        return 0.5
    return score + zlib.crc32(solution_str.encode()) % 997 / 997.0
