"""Shared fixtures: a tiny random Qwen2.5-VL with the real tokenizer, and synthetic data in the unified schema.

Everything is offline: the model directory is built once per transformers version and cached under
``.cache/`` (or ``$MEDVLTHINKER_CACHE``); synthetic data sets are written per test session.
"""

from __future__ import annotations

import os

# Offline, and vLLM's CPU build in-process with a small KV cache (the multiprocess engine costs ~20 s a start).
for key, value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "WANDB_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
}.items():
    os.environ.setdefault(key, value)

import pytest  # noqa: E402

from medvlthinker import synthetic  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir():
    """Path of the tiny random Qwen2.5-VL model directory (config, safetensors, processor, chat template)."""
    from medvlthinker.tiny import tiny_model_path

    return tiny_model_path()


@pytest.fixture(scope="session")
def tiny_processor(tiny_model_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def eval_rows():
    """Synthetic rows for the six benchmarks (4 per benchmark), with PIL images."""
    return synthetic.make_eval_rows(rows_per_benchmark=4, seed=0)


@pytest.fixture(scope="session")
def eval_dataset_dir(tmp_path_factory, eval_rows):
    """The synthetic evaluation set saved with ``save_to_disk`` (the layout of a local HF data set)."""
    path = tmp_path_factory.mktemp("data") / "eval"
    synthetic.to_dataset(eval_rows).save_to_disk(str(path))
    return path


@pytest.fixture(scope="session")
def train_text_rows():
    """m23k-shaped text-only rows with reasoning."""
    return synthetic.make_text_rows(n=16, seed=1)


@pytest.fixture(scope="session")
def train_image_rows():
    """PMC-VQA-shaped single-image rows with reasoning."""
    return synthetic.make_image_rows(n=16, seed=2)
