"""What one engine of a run is built from, in one place: the run's data set, the request builder, the backend
(``--backend`` vllm, hf or api, chosen here and nowhere else) and the stream of records through it.

A local rank (:mod:`medvlthinker.inference.runner`) and a Ray actor (:mod:`medvlthinker.inference.ray_pool`) both
build their engine with these functions, so the two paths cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medvlthinker.inference.image_modes import with_image_mode
from medvlthinker.inference.records import make_record
from medvlthinker.inference.run_config import RunConfig


def load_rows(config: RunConfig, *, check_images: bool):
    """The run's data set, validated. With ``check_images`` every image is checked too: its header and checksums
    (each is decoded once, later, when its request is built), or its pixels with ``config.full_image_check``."""
    from medvlthinker.data import check_dataset_images, load_unified

    ds = load_unified(config.dataset_name, config.split, subset=config.subset, size=config.dataset_size,
                      validate=True, allow_outside_images=config.allow_outside_images)
    if check_images and not config.ignore_image and "images" in ds.column_names:
        check_dataset_images(ds, source=config.dataset_name, progress=config.progress,
                             decode=config.full_image_check)
    return ds


def make_builder(config: RunConfig):
    """The request builder of ``config``'s backend: chat messages for the api, the model's processor otherwise."""
    from medvlthinker.inference.requests import ApiRequestBuilder, RequestBuilder
    from medvlthinker.prompts import resolve_instruction

    instruction = resolve_instruction(config.instruction_prompt)
    if config.backend == "api":
        return ApiRequestBuilder(ignore_image=config.ignore_image, instruction=instruction)
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(config.model)
    template = Path(config.chat_template).read_text() if config.chat_template else None
    return RequestBuilder(processor, min_pixels=config.min_pixels, max_pixels=config.max_pixels,
                          ignore_image=config.ignore_image, chat_template=template,
                          prompt_mode=config.prompt_mode, instruction=instruction)


def backend_kwargs(config: RunConfig, max_images: int) -> dict[str, Any]:
    """The keyword arguments of ``config``'s backend class (:func:`make_backend`)."""
    if config.backend == "vllm":
        limit = config.limit_mm_per_prompt if config.limit_mm_per_prompt is not None else max(max_images, 1)
        # --engine_kwargs go to the engine as they are, over the flags'
        return {**dict(tp_size=config.tp_size, gpu_memory_utilization=config.gpu_memory_utilization,
                       max_model_len=config.max_model_len, seed=config.seed, dtype=config.dtype,
                       limit_mm_per_prompt={"image": 0 if config.ignore_image else limit, "video": 0},
                       mm_processor_cache_gb=config.mm_processor_cache_gb), **config.engine_kwargs}
    if config.backend == "api":
        return {**dict(base_url=config.api_base, api_key_env=config.api_key_env), **config.engine_kwargs}
    return dict(dtype=config.dtype, batch_size=config.batch_size)


def make_backend(config: RunConfig, max_images: int):
    """The backend ``config.backend`` names, started on ``config.model``; ``max_images`` is the most images a row
    of the run holds (vLLM reserves memory for them)."""
    from medvlthinker.inference import backends

    kwargs = backend_kwargs(config, max_images)
    if config.backend == "api":
        from medvlthinker.inference.api_backend import ApiBackend

        return ApiBackend(config.model, **kwargs)
    from medvlthinker.compat.cpu_allocator import keep_freed_memory_on_cpu

    keep_freed_memory_on_cpu()
    if config.backend == "vllm":
        return backends.VllmBackend(config.model, **kwargs)
    if config.backend == "hf":
        return backends.HfBackend(config.model, **kwargs)
    raise ValueError(f"unknown backend {config.backend!r}; fix: --backend one of {backends.BACKENDS}")


def stream_records(config: RunConfig, rows, builder: Any, backend: Any, *, window: int | None = None,
                   source: Any = None):
    """Generate ``rows`` (any iterable of unified rows, read lazily) and yield one record per row as it finishes.
    ``source`` is the run's whole data set (:func:`load_rows`), from which ``--image_mode shuffled`` draws its
    donor pictures; it is loaded here when the caller does not hold it.

    At most ``window`` requests exist at any time (default: the backend's batch capacity): a request is built
    (prompt rendered, images decoded and resized) only when the engine has room for it, so memory does not grow
    with the number of rows.
    """
    window = window or config.window or backend.default_window(config.sampling)
    if config.image_mode == "shuffled" and source is None:
        source = load_rows(config, check_images=False)
    requests = (builder.build(row) for row in with_image_mode(rows, config, source))
    for request, completions in backend.generate(requests, config.sampling, window=window):
        yield make_record(request.row, request.prompt, request.prompt_tokens, request.image_tokens, completions,
                          llava_med_rule=config.llava_med_rule)
