"""Inference for evaluation and pass-rate estimation: one request builder, three backends, a resumable runner.

- :class:`SamplingSettings` (``settings``): temperature, top_p, max_tokens, n, seed -> vLLM or transformers.
- :class:`RequestBuilder` (``requests``): row -> chat-templated prompt + qwen-vl-utils image inputs.
- :class:`VllmBackend`, :class:`HfBackend`, :class:`ApiBackend` (``backends``): ``generate(requests, settings,
  window=W)`` streams lazily built requests through the engine (or an OpenAI-compatible API), at most W in
  flight, and yields finished rows.
- :func:`run`, :class:`RunConfig` (``runner``): validate, assign rows to ranks (``assign``: interleaved), generate,
  append, resume, merge; ``ray_pool``: the same on a Ray actor pool sharing one row queue.
- ``records``: the contract-3 files (shards, eval_results.jsonl, accuracy.json); ``regrade``: regrade mode;
  ``workloads``: the benchmarks' workloads and timing helpers.

Heavy libraries (torch, transformers, vLLM) are imported only where used.
"""

from medvlthinker.inference.records import accuracy_table, merge_results, shard_bounds
from medvlthinker.inference.requests import Request, RequestBuilder
from medvlthinker.inference.run_config import RunConfig
from medvlthinker.inference.runner import run, run_rank
from medvlthinker.inference.settings import EVAL_GREEDY, PASS_RATE, SamplingSettings

__all__ = [
    "EVAL_GREEDY",
    "PASS_RATE",
    "Request",
    "RequestBuilder",
    "RunConfig",
    "SamplingSettings",
    "accuracy_table",
    "merge_results",
    "run",
    "run_rank",
    "shard_bounds",
]
