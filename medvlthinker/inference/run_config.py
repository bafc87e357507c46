"""The settings of one inference run: :class:`RunConfig`, whose fields (with their help) are the flags of
eval/run_offline_inference.py (:mod:`medvlthinker.cli`). The sampling fields are SamplingSettings' own."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from medvlthinker.cli import copy_field, option
from medvlthinker.data.sources import looks_local
from medvlthinker.errors import UserError
from medvlthinker.images import MAX_PIXELS, MIN_PIXELS
from medvlthinker.inference.openai_client import API_KEY_ENV
from medvlthinker.inference.settings import SAMPLING_FIELDS, SamplingSettings

DEFAULT_EVAL_DATASET = "UCSC-VLAA/MedVLThinker-Eval"


def _backends() -> list[str]:
    from medvlthinker.inference.backends import BACKENDS

    return list(BACKENDS)


def _prompt_modes() -> list[str]:
    from medvlthinker.prompts import PROMPT_MODES

    return list(PROMPT_MODES)


def _image_modes() -> list[str]:
    from medvlthinker.inference.image_modes import IMAGE_MODES

    return list(IMAGE_MODES)


def _instruction_names() -> str:
    from medvlthinker.prompts import INSTRUCTION_PROMPTS

    return ", ".join(INSTRUCTION_PROMPTS)


@dataclass
class RunConfig:
    """Every setting of one inference run; eval/run_offline_inference.py derives its flags and their help from these
    fields (:mod:`medvlthinker.cli`)."""

    model: str = option(help="model directory or Hugging Face name")
    output_dir: str = option(help="the run's directory: shard files, eval_results.jsonl, accuracy.json, args.json",
                             type=click.Path(file_okay=False))
    backend: str = option("vllm", "vLLM offline (the paper), transformers generate (models vLLM lacks), or an "
                          "OpenAI-compatible API (--api_base; the key from --api_key_env)",
                          type=click.Choice(_backends()))
    dataset_name: str = option(DEFAULT_EVAL_DATASET,
                               "Hugging Face name or local path (save_to_disk dir, .parquet, .jsonl)")
    split: str | None = option("test", "the split of a Hub data set")
    subset: list[str] | None = option(None, "keep these dataset_name values (repeat or comma-separate)",
                                      multiple=True)
    dataset_size: int | None = option(None, "keep the first N rows")
    # the sampling settings are SamplingSettings' fields (the paper's eval settings and their help), not restated
    temperature: float = copy_field(SamplingSettings, "temperature")
    top_p: float = copy_field(SamplingSettings, "top_p")
    max_tokens: int = copy_field(SamplingSettings, "max_tokens")
    n: int = copy_field(SamplingSettings, "n")
    seed: int = copy_field(SamplingSettings, "seed")
    ignore_eos: bool = copy_field(SamplingSettings, "ignore_eos")
    engine_seed_only: bool = copy_field(SamplingSettings, "engine_seed_only")
    dp_size: int = option(1, "data-parallel engines, one per GPU slice: on this node, or on the whole cluster "
                          "with --ray")
    tp_size: int = option(1, "tensor-parallel GPUs per engine (32B: 4)")
    node_size: int = option(1, "nodes sharing the run")
    node_rank: int = option(0, "this node's rank")
    overwrite: bool = option(False, "delete this run's previous records instead of resuming")
    ignore_image: bool = option(False, "text-only ablation: drop the images (the same as --image_mode none)")
    image_mode: str = option("as_is", "what the model is shown in place of each row's images: as_is (the paper), "
                             "blank (a uniform grey image of the same size), shuffled (the images of another row of "
                             "the same benchmark with as many images, seeded by --seed), none (no images, "
                             "--ignore_image); docs/experiments.md", type=click.Choice(_image_modes()))
    allow_outside_images: bool = option(False, "read image paths that lead outside the data set's folder (only for "
                                        "a data set you trust)")
    gpu_memory_utilization: float = option(0.9, "share of each GPU's memory vLLM may take")
    max_model_len: int | None = option(None, "vLLM's context length (default: the model's)")
    limit_mm_per_prompt: int | None = option(None, "images per prompt the engine reserves for (default: the most "
                                             "any row has)")
    min_pixels: int = option(MIN_PIXELS, "qwen-vl-utils' lower bound on an image's pixels")
    max_pixels: int = option(MAX_PIXELS, "qwen-vl-utils' upper bound on an image's pixels")
    chat_template: str | None = option(None, "a .jinja chat template replacing the processor's",
                                       type=click.Path(exists=True, dir_okay=False))
    prompt_mode: str = option("qwen_chat", "qwen_chat: the chat template (the paper); raw_image_tokens: "
                              "'<image>\\n' per image + user text; gemma3: Gemma 3 / MedGemma turn markers; the last "
                              "two without qwen-vl-utils resizing", type=click.Choice(_prompt_modes()))
    instruction_prompt: str | None = option(None, f"the instruction: a name ({_instruction_names()}; step_by_step "
                                            "for LLaVA-Med and HuatuoGPT-Vision) or the text (default: the paper's)")
    api_base: str | None = option(None, "api backend: endpoint URL (default: OPENAI_BASE_URL, else OpenAI)")
    api_key_env: str = option(API_KEY_ENV, "api backend: the environment variable holding the key (the key "
                              "is never written)")
    batch_size: int = option(8, "prompts per generate call (hf backend)")
    llava_med_rule: bool = option(False, "also accept the answer text as a substring")
    dtype: str | None = option(None, "default: bfloat16 on GPU, float32 on CPU")
    engine_kwargs: dict[str, Any] = option(default_factory=dict, help="extra vLLM engine arguments as JSON; for the "
                                           "api backend max_retries, backoff, max_backoff, timeout", cli_default="{}")
    window: int | None = option(None, "requests in flight per engine (default: the engine's batch capacity, vLLM "
                                "max_num_seqs / n x 1.25; hf: --batch_size; api: 8 concurrent requests); memory "
                                "grows with it, not with the rows")
    mm_processor_cache_gb: float = option(0.0, "vLLM's multimodal processor cache per engine, GiB: it keeps every "
                                          "image's processed pixels in case the same image comes again, which "
                                          "never happens in an eval or pass-rate run (one image a row, each row "
                                          "once), so it only costs memory (about 6 MB a 1000x1000 row, up to its "
                                          "size); 0 turns it off. vLLM's own default is 4")
    full_image_check: bool = option(False, "decode every image before the engine starts (one more full pass over "
                                    "the images); by default each image's header and checksums are checked "
                                    "first and its pixels decoded once, when its request is built")
    ray: bool = option(False, "run the engines as a Ray actor pool sharing one row queue (multi-node)")
    ray_address: str | None = option(None, "Ray cluster to join (default: RAY_ADDRESS, as set by ray job submit; "
                                     "else a local cluster)")
    progress: bool = option(True, "show progress bars", cli=False)

    def __post_init__(self) -> None:
        from medvlthinker.inference.backends import BACKENDS
        from medvlthinker.inference.image_modes import check_image_mode
        from medvlthinker.prompts import PROMPT_MODES, resolve_instruction

        if self.backend not in BACKENDS:
            raise ValueError(f"--backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.prompt_mode not in PROMPT_MODES:
            raise ValueError(f"--prompt_mode must be one of {PROMPT_MODES}, got {self.prompt_mode!r}")
        if self.backend == "api" and self.prompt_mode != "qwen_chat":
            raise ValueError(f"--prompt_mode {self.prompt_mode} writes the model's tokens itself, the api backend "
                             "sends chat messages; fix: drop --prompt_mode (the server applies its chat template)")
        resolve_instruction(self.instruction_prompt)
        check_image_mode(self.image_mode)
        if self.ignore_image and self.image_mode not in ("as_is", "none"):
            raise ValueError(f"--ignore_image drops the images, --image_mode {self.image_mode} replaces them; fix: "
                             "give one of the two (--image_mode none is --ignore_image)")
        # one spelling in the record: --ignore_image is --image_mode none
        if self.ignore_image:
            self.image_mode = "none"
        self.ignore_image = self.image_mode == "none"
        for name in ("dp_size", "tp_size", "node_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.node_rank < self.node_size:
            raise ValueError(f"--node_rank {self.node_rank} must be in 0..{self.node_size - 1} (--node_size)")
        if self.window is not None and self.window < 1:
            raise ValueError(f"--window must be >= 1, got {self.window}; fix: leave it out for the engine's capacity")
        if self.mm_processor_cache_gb < 0:
            raise ValueError(f"--mm_processor_cache_gb must be >= 0, got {self.mm_processor_cache_gb}; fix: 0 (off) "
                             "or a size in GiB")
        if self.backend != "api" and looks_local(self.model) and not Path(self.model).expanduser().is_dir():
            raise UserError(f"--model {self.model}", "no such model folder",
                            fix="check the path (a folder holding config.json and the weights), or give a Hugging "
                                "Face model name such as Qwen/Qwen2.5-VL-3B-Instruct")
        if self.ray and self.node_size > 1:
            raise ValueError("--ray spreads the engines over the whole cluster itself; fix: drop --node_size and "
                             "--node_rank (launch once, e.g. with ray job submit)")

    @property
    def sampling(self) -> SamplingSettings:
        return SamplingSettings(**{name: getattr(self, name) for name in SAMPLING_FIELDS})

    @property
    def world_size(self) -> int:
        return self.node_size * self.dp_size


def parse_engine_kwargs(text: str | None) -> dict[str, Any]:
    """``--engine_kwargs`` as a dict; text that is not a JSON object is a one-line error naming the flag.

    >>> parse_engine_kwargs('{"enforce_eager": true}'), parse_engine_kwargs(None)
    ({'enforce_eager': True}, {})
    """
    try:
        value = json.loads(text) if text else {}
    except ValueError as exc:
        raise UserError(f"--engine_kwargs {text!r}", f"is not JSON ({exc})",
                        fix='write a JSON object in single quotes, e.g. --engine_kwargs \'{"enforce_eager": true}\'') from None
    if not isinstance(value, dict):
        raise UserError(f"--engine_kwargs {text!r}", f"is a JSON {type(value).__name__}, not an object",
                        fix='write a JSON object, e.g. --engine_kwargs \'{"enforce_eager": true}\'')
    return value


def load_config(path: str | os.PathLike) -> RunConfig:
    """The RunConfig stored in an output directory's args.json."""
    return RunConfig(**json.loads(Path(path).read_text())["args"])
