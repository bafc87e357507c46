"""Data-parallel inference on a Ray cluster: a pool of ``dp_size`` actors, one engine each (``tp_size`` GPUs),
pulling rows from one shared queue.

- Balance: an actor takes a few rows at a time, only when its engine has room (its window), so a fast engine
  takes more rows and every engine finishes within about one window of the others, whatever the row lengths.
- Streaming: each actor streams its rows through its engine exactly as a local rank does
  (:func:`medvlthinker.inference.engines.stream_records`) and hands back each record the moment it finishes (a Ray
  streaming generator); the driver appends it to that actor's shard file at once, so the output directory lives
  only where the driver runs (no shared file system needed for it).
- Resume: the driver skips every dataset_index already in any shard file, so a killed run (driver, actor or
  node) loses only the rows in flight; rerun the same command.

Launch on an existing cluster with ``ray job submit -- python eval/run_offline_inference.py --ray ...``; without a
cluster (``--ray_address`` unset and no ``RAY_ADDRESS``) a local one is started. Every node must be able to read
``--dataset_name`` (a Hub name, or a path on shared storage) and ``--model``.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from medvlthinker import env
from medvlthinker.inference.engines import load_rows, make_backend, make_builder, stream_records
from medvlthinker.inference.records import ShardWriter, finished_indices, shard_name
from medvlthinker.inference.run_config import RunConfig

# rows an actor takes from the queue at a time (smaller: finer balance at the end; larger: fewer queue calls)
TAKE_MAX = 16


class RowQueue:
    """The rows still to generate (positions in the data set), handed out first come, first served."""

    def __init__(self, positions: list[int]) -> None:
        self.positions = list(reversed(positions))

    def take(self, count: int) -> list[int]:
        taken = [self.positions.pop() for _ in range(min(count, len(self.positions)))]
        return taken


class InferenceWorker:
    """One engine of the pool. ``run`` is a generator: records come back to the driver as they finish."""

    def __init__(self, config: dict[str, Any], worker: int, max_images: int,
                 secrets: dict[str, str] | None = None) -> None:
        os.environ.update(secrets or {})  # see _forwarded_secrets
        self.config = RunConfig(**config)
        self.worker = worker
        self.rows = load_rows(self.config, check_images=False)
        self.builder = make_builder(self.config)
        self.backend = make_backend(self.config, max_images)

    def run(self, queue: Any):
        import ray

        from medvlthinker.data.paging import raw_rows

        window = self.config.window or self.backend.default_window(self.config.sampling)
        take = max(1, min(TAKE_MAX, window // 4))

        def rows():
            while positions := ray.get(queue.take.remote(take)):
                yield from raw_rows(self.rows, positions)

        yield from stream_records(self.config, rows(), self.builder, self.backend, window=window, source=self.rows)

    def peak_in_flight(self) -> int:
        return getattr(self.backend, "peak_in_flight", 0)


def _connect(config) -> None:
    import ray

    if ray.is_initialized():
        return
    address = config.ray_address or env.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        # a local cluster: enough CPU slots for every actor, whatever the machine reports
        ray.init(num_cpus=max(os.cpu_count() or 1, config.dp_size), include_dashboard=False)


_FORWARDED_PREFIXES = ("VLLM_", "HF_", "TRANSFORMERS_", "OMP_", "TOKENIZERS_")
_SECRET_MARKERS = ("TOKEN", "KEY", "SECRET", "PASSWORD", "CREDENTIAL")


def is_secret(name: str) -> bool:
    """Whether an environment variable holds a credential (``HF_TOKEN``, ``VLLM_API_KEY``, ...).

    >>> is_secret("HF_TOKEN"), is_secret("HF_HUB_OFFLINE"), is_secret("TOKENIZERS_PARALLELISM")
    (True, False, False)
    """
    return any(marker in name.upper().replace("TOKENIZERS", "") for marker in _SECRET_MARKERS)


def _forwarded_env() -> dict[str, str]:
    """The driver's settings that shape the engines (vLLM CPU settings, offline flags), for the actors; given per
    actor, so they merge with a submitted job's own runtime environment instead of replacing it.

    Credentials are left out: Ray writes a runtime environment in clear into its session logs
    (``runtime_env_agent.log``, readable by every user of the node); they travel as actor arguments instead."""
    return {k: v for k, v in os.environ.items() if k.startswith(_FORWARDED_PREFIXES) and not is_secret(k)}


def _forwarded_secrets() -> dict[str, str]:
    """The credentials among the forwarded variables (a Hub token for a gated model), handed to each actor's
    constructor, which sets them in its own environment: they never enter a runtime environment or a log."""
    return {k: v for k, v in os.environ.items() if k.startswith(_FORWARDED_PREFIXES) and is_secret(k)}


def run_pool(config, ds, *, max_images: int) -> int:
    """Generate every row of ``ds`` not yet written in ``config.output_dir`` on ``config.dp_size`` Ray actors;
    return the number of records written. ``ds`` is the run's (validated) data set; actors load it themselves."""
    import ray
    from tqdm.auto import tqdm

    from medvlthinker.inference.backends import visible_devices

    done = finished_indices(config.output_dir)
    todo = [pos for pos, idx in enumerate(ds["dataset_index"]) if idx not in done]
    if not todo:
        return 0
    _connect(config)
    gpus = config.tp_size if ray.cluster_resources().get("GPU", 0) or visible_devices() else 0
    if gpus and ray.cluster_resources().get("GPU", 0) < config.dp_size * gpus:
        raise ValueError(
            f"--dp_size {config.dp_size} x --tp_size {config.tp_size} needs {config.dp_size * gpus} GPUs, the Ray "
            f"cluster has {int(ray.cluster_resources().get('GPU', 0))}; fix: lower --dp_size or add nodes"
        )
    queue = ray.remote(num_cpus=0)(RowQueue).remote(todo)
    worker_cls = ray.remote(num_cpus=1, num_gpus=gpus, runtime_env={"env_vars": _forwarded_env()})(InferenceWorker)
    world = config.dp_size
    secrets = _forwarded_secrets()
    workers = [worker_cls.remote(asdict(config), w, max_images, secrets) for w in range(world)]
    streams = {worker.run.remote(queue): w for w, worker in enumerate(workers)}
    writers = {w: ShardWriter(Path(config.output_dir) / shard_name(w, world)) for w in range(world)}
    bar = tqdm(total=len(todo), desc=f"ray pool of {world} {config.backend}", unit="row", disable=not config.progress)
    written = 0
    try:
        while streams:
            ready, _ = ray.wait(list(streams), num_returns=1)
            for stream in ready:
                w = streams[stream]
                try:
                    ref = next(stream)
                except StopIteration:
                    del streams[stream]
                    continue
                try:
                    record = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    raise RuntimeError(
                        f"Ray worker {w} of {world} failed ({exc}); the finished records are kept; fix the error "
                        f"above and rerun the same command to resume"
                    ) from exc
                writers[w].write(record)
                written += 1
                bar.update(1)
        peaks = ray.get([worker.peak_in_flight.remote() for worker in workers])
    finally:
        bar.close()
        for writer in writers.values():
            writer.close()
        for worker in workers:
            ray.kill(worker)
    print(f"ray pool of {world} {config.backend}: {written} rows; at most {max(peaks)} requests in flight per engine",
          flush=True)
    return written
