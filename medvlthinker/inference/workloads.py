"""Workloads for the inference benchmarks: the evaluation set's composition and answer lengths, and timing helpers.

The eval set (``UCSC-VLAA/MedVLThinker-Eval``, 8,220 rows) is ordered by benchmark, in the registry's
``ROW_ORDER`` (PMC-VQA, the three closed sets, MMMU, MedXpertQA: not the paper's column order). Mean generated
tokens per benchmark are public measurements of a released MedVLThinker-7B; they set how long each row's answer
is in the variable-length and balance benchmarks when no recorded run is given.
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from medvlthinker.benchmarks import ROW_ORDER

MEAN_TOKENS = {"pmc_vqa": 204, "MMMU-medical": 291, "MedXpertQA-MM": 308, "pathvqa_closed": 150,
               "slake_closed": 130, "vqa_rad_closed": 129}
"""Mean generated tokens per benchmark of a released MedVLThinker-7B (the row counts come from the registry)."""

# (dataset_name, rows, mean generated tokens), in the eval set's row order
EVAL_SET: tuple[tuple[str, int, int], ...] = tuple(
    (b.dataset_name, b.rows, MEAN_TOKENS[b.dataset_name]) for b in ROW_ORDER
)


def eval_set_lengths(*, scale: float = 1.0, rows: int | None = None, seed: int | None = None) -> list[int]:
    """One answer length per row of the eval set, in its row order.

    ``seed`` None: every row gets its benchmark's mean; otherwise lengths are drawn from an exponential
    distribution with that mean (answers of one benchmark vary a lot). ``scale`` multiplies every length (CPU
    runs use short answers); ``rows`` keeps that many rows with the same benchmark proportions and order.

    >>> lengths = eval_set_lengths()
    >>> len(lengths), lengths[0], lengths[-1]
    (8220, 204, 308)
    >>> len(eval_set_lengths(rows=822, scale=0.1))
    822
    """
    total = sum(n for _, n, _ in EVAL_SET)
    rng = random.Random(seed)
    out: list[int] = []
    for _, n, mean in EVAL_SET:
        count = n if rows is None else max(1, round(n * rows / total))
        for _ in range(count):
            value = mean if seed is None else rng.expovariate(1.0 / mean)
            out.append(max(1, round(value * scale)))
    if rows is not None:
        out = out[:rows] + [out[-1]] * max(0, rows - len(out))
    return out


def median_of(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def interleaved_repeats(arms: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run each arm once per repetition, alternating which goes first, and collect what each returns.

    Noisy shared machines drift over minutes; interleaving the arms (A B, B A, A B, ...) puts both under the same
    drift, and the medians over repetitions discard the outliers.
    """
    names = list(arms)
    results: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(repeats):
        order = names if rep % 2 == 0 else list(reversed(names))
        for name in order:
            results[name].append(arms[name]())
    return results


class PeakRss:
    """Samples this process's resident set size every ``interval`` seconds while active; ``peak`` in bytes.

    Besides the total (what ``ru_maxrss`` reports) it keeps the anonymous part (``RssAnon``: heap, tensors),
    which excludes pages of memory-mapped data set files that the kernel can drop at any time.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak = 0
        self.peak_anon = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def read() -> tuple[int, int]:
        fields: dict[str, int] = {}
        with open("/proc/self/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "RssAnon"):
                    fields[key] = int(value.split()[0]) * 1024
        return fields.get("VmRSS", 0), fields.get("RssAnon", 0)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(self.interval)

    def sample(self) -> None:
        rss, anon = self.read()
        self.peak = max(self.peak, rss)
        self.peak_anon = max(self.peak_anon, anon)

    def __enter__(self) -> PeakRss:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()


def eval_set_rows(num_rows: int, *, image_size: tuple[int, int] = (56, 56), seed: int = 0) -> list[dict]:
    """``num_rows`` synthetic one-image rows named and ordered like the eval set's benchmarks (same proportions)."""
    from medvlthinker.demo import synthetic

    total = sum(n for _, n, _ in EVAL_SET)
    rows: list[dict] = []
    for pos, (name, n, _) in enumerate(EVAL_SET):
        count = num_rows - len(rows) if pos == len(EVAL_SET) - 1 else max(1, round(n * num_rows / total))
        count = max(0, min(count, num_rows - len(rows)))
        rows += synthetic.make_image_rows(n=count, seed=seed + pos, start_index=len(rows), dataset_name=name,
                                          image_size=image_size)
    return rows


def fixed_length_builder(processor: Any, lengths: Sequence[int], **kwargs: Any):
    """A RequestBuilder whose request for dataset_index ``i`` generates exactly ``lengths[i]`` tokens (with
    ``ignore_eos``): a workload of known answer lengths through the real runner."""
    from medvlthinker.inference.requests import RequestBuilder

    class FixedLengthBuilder(RequestBuilder):
        def build(self, row):
            request = super().build(row)
            request.max_tokens = int(lengths[request.dataset_index])
            return request

    return FixedLengthBuilder(processor, **kwargs)


def benchmark_model(model: str | None, on_gpu: bool, tmp: str | os.PathLike) -> tuple[str, str]:
    """``(model directory, vLLM load_format)`` of a benchmark: ``model`` when given; else on a GPU the
    Qwen2.5-VL-3B architecture with dummy weights (configs/models/qwen2.5-vl-3b and the Qwen2.5 tokenizer, copied
    into ``tmp``), on CPU the tiny test model."""
    if model:
        return model, "auto"
    if on_gpu:
        from medvlthinker.demo.tiny import build_qwen_tokenizer

        target = Path(tmp) / "qwen2.5-vl-3b"
        shutil.copytree(Path(__file__).resolve().parents[2] / "configs" / "models" / "qwen2.5-vl-3b", target)
        build_qwen_tokenizer(target)
        return str(target), "dummy"
    from medvlthinker.demo.tiny import tiny_model_path

    return str(tiny_model_path()), "auto"


def runner_arm(base: Any, tmp: str | os.PathLike, backend: Any, builder: Any) -> Callable[[], float]:
    """The runner arm of a throughput benchmark: ``run_rank`` on a fresh output directory under ``tmp`` per call,
    returning output tokens/s (the work any run does: load, stream, grade, append records); ``arm.last`` is the
    output directory of the last call."""
    from dataclasses import replace

    from medvlthinker.inference.records import read_records, shard_name
    from medvlthinker.inference.runner import run_rank

    runs = iter(range(10**6))

    def arm() -> float:
        config = replace(base, output_dir=str(Path(tmp) / f"out-{next(runs)}"))
        t0 = time.perf_counter()
        run_rank(config, 0, validated=True, backend=backend, builder=builder)
        seconds = time.perf_counter() - t0
        records = read_records(Path(config.output_dir) / shard_name(0, 1))
        arm.last = config.output_dir
        return sum(r["output_tokens"] for rec in records for r in rec["rollouts"]) / seconds

    return arm


def arms_report(results: dict[str, list[float]], repeats: int, *, ratio: str, medians: dict[str, str],
                summary: str) -> list[str]:
    """The lines a two-arm benchmark prints: per repetition each arm's tokens/s and the second over the first
    (``ratio``), then each arm's median (labelled by ``medians``) and the median ratio (``summary``).

    >>> print("\\n".join(arms_report({"raw": [10.0, 20.0], "runner": [11.0, 19.0]}, 2, ratio="ratio",
    ...                              medians={"raw": "raw:", "runner": "runner (run_rank):"}, summary="ratio")))
    repetition 0: raw 10.0 tokens/s, runner 11.0 tokens/s, ratio 1.100
    repetition 1: raw 20.0 tokens/s, runner 19.0 tokens/s, ratio 0.950
    median raw:               15.0 output tokens/s
    median runner (run_rank): 15.0 output tokens/s
    median ratio over 2 interleaved repetitions: 1.025
    """
    (first, base), (second, other) = results.items()
    ratios = [b / a for a, b in zip(base, other)]
    lines = [f"repetition {rep}: {first} {a:.1f} tokens/s, {second} {b:.1f} tokens/s, {ratio} {r:.3f}"
             for rep, (a, b, r) in enumerate(zip(base, other, ratios))]
    width = max(len(label) for label in medians.values())
    lines += [f"median {medians[name].ljust(width)} {median_of(values):.1f} output tokens/s"
              for name, values in results.items()]
    lines.append(f"median {summary} over {repeats} interleaved repetitions: {median_of(ratios):.3f}")
    return lines


def compare_raw_and_runner(model_dir: str, tmp: str | os.PathLike, *, num_requests: int, max_tokens: int,
                           image_size: int, n: int = 1, repeats: int = 3, window: int | None = None,
                           load_format: str = "auto", gpu_memory_utilization: float = 0.9,
                           max_model_len: int = 4096, backend: Any = None) -> tuple[dict[str, list[float]], int]:
    """Output tokens/s of raw ``LLM.generate`` and of the runner (``run_rank``) on one engine and one workload:
    ``num_requests`` one-image rows, ``n`` samples each of exactly ``max_tokens`` tokens (ignore_eos), temperature
    1.0, the arms interleaved ``repeats`` times. Returns ``({"raw": [...], "runner": [...]}, the runner's window)``.

    Both arms do the work any run must: render the prompts and resize the images (the runner's RequestBuilder,
    shared), then generate. The raw arm builds every input first and calls ``LLM.generate`` once (the original's
    pattern); the runner arm also loads and validates the data set, streams the rows through the engine's window,
    grades and appends each record to a shard file. ``backend``: a ``VllmBackend`` of ``model_dir`` to reuse
    (default: a new engine).
    """
    import datasets
    from transformers import AutoProcessor

    from medvlthinker.data import to_dataset
    from medvlthinker.demo import synthetic
    from medvlthinker.inference.backends import VllmBackend
    from medvlthinker.inference.requests import RequestBuilder
    from medvlthinker.inference.run_config import RunConfig

    tmp = Path(tmp)
    rows = synthetic.make_image_rows(n=num_requests, seed=0, image_size=(image_size, image_size))
    to_dataset(rows).save_to_disk(str(tmp / "data"))
    if backend is None:
        backend = VllmBackend(model_dir, gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                              limit_mm_per_prompt={"image": 1, "video": 0}, seed=42, load_format=load_format)
    llm = backend.llm
    builder = RequestBuilder(AutoProcessor.from_pretrained(model_dir))
    base = RunConfig(model=model_dir, output_dir="", dataset_name=str(tmp / "data"), temperature=1.0,
                     max_tokens=max_tokens, n=n, ignore_eos=True, progress=False, window=window,
                     gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len)
    params = base.sampling.to_vllm()
    warm = [builder.build(row).vllm_input() for row in rows[: min(8, len(rows))]]
    llm.generate(warm, params, use_tqdm=False)  # warm-up, not timed

    def raw() -> float:
        t0 = time.perf_counter()
        stored = datasets.load_from_disk(str(tmp / "data"))
        inputs = [builder.build(row).vllm_input() for row in stored]
        outputs = llm.generate(inputs, params, use_tqdm=False)
        return sum(len(c.token_ids) for o in outputs for c in o.outputs) / (time.perf_counter() - t0)

    results = interleaved_repeats({"raw": raw, "runner": runner_arm(base, tmp, backend, builder)}, repeats)
    return results, window or backend.default_window(base.sampling)

