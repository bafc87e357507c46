"""Test-only reward: the project's reward, plus a deterministic spread for completions without an answer tag.

A random model never writes an answer, so the paper's reward gives every rollout 0, every GRPO advantage is 0 and
the actor never moves. The spread (distinct characters mod 7, in sevenths) gives the rollouts of one prompt
different rewards. Completions with an answer tag keep the paper's 0/1 score, so the RL preflight's reward checks
still pass on this module.
"""

from medvlthinker.reward import compute_score as paper_score


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    score = float(paper_score(data_source, solution_str, ground_truth, extra_info))
    if "<answer>" in solution_str:
        return score
    return score + (len(set(solution_str)) % 7) / 7.0
