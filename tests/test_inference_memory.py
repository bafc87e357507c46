"""What keeps a long inference run's memory flat: vLLM's multimodal processor cache is off unless asked for (checked
through vLLM's own config and cache factory), and each image is decoded once per row (a header-and-checksum check
before the engine starts, the pixels when the request is built)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from medvlthinker import synthetic
from medvlthinker.inference import RunConfig, run
from medvlthinker.inference.backends import vllm_engine_args
from medvlthinker.inference.runner import backend_kwargs
from medvlthinker.schema import SchemaError


def _processor_cache(config: RunConfig):
    """The processor cache vLLM builds for the engine ``config``'s run would start (no weights are loaded)."""
    from vllm.engine.arg_utils import EngineArgs
    from vllm.multimodal.cache import processor_cache_from_config

    args = vllm_engine_args(config.model, **backend_kwargs(config, max_images=1))
    vllm_config = EngineArgs(**args).create_engine_config()
    return vllm_config.model_config.multimodal_config.mm_processor_cache_gb, processor_cache_from_config(vllm_config)


@pytest.mark.vllm
def test_processor_cache_is_off_unless_asked_for(tmp_path, tiny_model_dir):
    base = dict(model=str(tiny_model_dir), output_dir=str(tmp_path), max_model_len=2048)
    size, cache = _processor_cache(RunConfig(**base))
    assert size == 0 and cache is None
    size, cache = _processor_cache(RunConfig(**base, mm_processor_cache_gb=0.5))
    assert size == 0.5 and cache is not None
    # --engine_kwargs is passed through to the engine as it is and wins
    size, cache = _processor_cache(RunConfig(**base, engine_kwargs={"mm_processor_cache_gb": 1}))
    assert size == 1 and cache is not None


def test_negative_processor_cache_size_is_refused():
    with pytest.raises(ValueError, match="--mm_processor_cache_gb must be >= 0"):
        RunConfig(model="m", output_dir="o", mm_processor_cache_gb=-1)


class DecodeCounter:
    """Counts PIL's pixel decodes (one ``Image._getdecoder`` call per decoded image of these one-tile PNGs)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        original = Image._getdecoder

        def counting(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(Image, "_getdecoder", counting)


def test_each_image_is_decoded_once(tmp_path, tiny_model_dir, monkeypatch):
    rows = synthetic.make_eval_rows(rows_per_benchmark=1, seed=5)
    images = sum(len(r["images"] or []) for r in rows)
    assert images > len([r for r in rows if r["images"]])  # multi-image rows are in it
    synthetic.to_dataset(rows).save_to_disk(str(tmp_path / "data"))
    counter = DecodeCounter(monkeypatch)
    config = RunConfig(model=str(tiny_model_dir), backend="hf", dataset_name=str(tmp_path / "data"),
                       output_dir=str(tmp_path / "out"), max_tokens=1, max_pixels=64 * 28 * 28, progress=False)
    run(config)
    assert counter.calls == images
    # the old behaviour on request: one full decoding pass before the engine starts, then the requests' own
    counter.calls = 0
    run(RunConfig(**{**config.__dict__, "output_dir": str(tmp_path / "full"), "full_image_check": True}))
    assert counter.calls == 2 * images


def _truncated_png() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 40).convert("RGB").save(buf, format="PNG")
    data = buf.getvalue()
    return data[: len(data) // 2]


def test_truncated_image_stops_before_generation(tmp_path, tiny_model_dir):
    """The header is intact and the pixels are cut off: the check before the engine starts still finds it."""
    rows = synthetic.make_eval_rows(rows_per_benchmark=1, seed=3)
    rows[2]["images"] = [{"bytes": _truncated_png(), "path": None}]
    synthetic.to_dataset(rows).save_to_disk(str(tmp_path / "data"))
    config = RunConfig(model=str(tiny_model_dir), backend="hf", dataset_name=str(tmp_path / "data"),
                       output_dir=str(tmp_path / "out"), max_tokens=2, progress=False)
    with pytest.raises(SchemaError, match=rf"dataset_index=2.*cannot be decoded"):
        run(config)
    assert not list((tmp_path / "out").glob("shard-*"))
