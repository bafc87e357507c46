"""What keeps a long inference run's memory flat: vLLM's multimodal processor cache is off unless asked for (checked
through vLLM's own config and cache factory), and each image is decoded once per row (a header-and-checksum check
before the engine starts, the pixels when the request is built)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from medvlthinker.data import to_dataset
from medvlthinker.demo import synthetic
from medvlthinker.inference import RunConfig, run
from medvlthinker.inference.backends import vllm_engine_args
from medvlthinker.inference.engines import backend_kwargs
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
    to_dataset(rows).save_to_disk(str(tmp_path / "data"))
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
    to_dataset(rows).save_to_disk(str(tmp_path / "data"))
    config = RunConfig(model=str(tiny_model_dir), backend="hf", dataset_name=str(tmp_path / "data"),
                       output_dir=str(tmp_path / "out"), max_tokens=2, progress=False)
    with pytest.raises(SchemaError, match=r"dataset_index=2.*cannot be decoded"):
        run(config)
    assert not list((tmp_path / "out").glob("shard-*"))


def test_memory_trace_measures_growth_per_row(tmp_path):
    """The benchmark's sampler on a process that keeps 4 MB a row and one that keeps nothing."""
    import sys

    from medvlthinker.inference.memory_trace import summarize, trace

    child = (
        "import sys, time\n"
        "keep, held = sys.argv[1] == 'keep', []\n"
        "with open(sys.argv[2], 'w') as out:\n"
        "    for _ in range(60):\n"
        "        block = bytearray(4 * 2**20)\n"
        "        block[::4096] = b'x' * len(block[::4096])\n"
        "        if keep:\n"
        "            held.append(block)\n"
        "        out.write('{}\\n'); out.flush(); time.sleep(0.05)\n"
    )
    slopes = {}
    for mode in ("keep", "drop"):
        rows = tmp_path / f"{mode}.jsonl"
        code, samples = trace([sys.executable, "-c", child, mode, str(rows)], str(rows), interval=0.02)
        assert code == 0
        slopes[mode] = summarize(samples, 60)["slope_anon_mb_per_row"]
    assert 3.5 < slopes["keep"] < 4.5
    assert abs(slopes["drop"]) < 0.2


def _rss_file() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("RssFile"))


def test_reading_rows_releases_the_mapped_pages(tmp_path):
    """A pass over a memory-mapped data set leaves its pages out of the resident set (they stay in the page cache);
    a plain pass keeps every page it read."""
    import datasets

    from medvlthinker.data import load_unified
    from medvlthinker.data.paging import raw_rows

    rows = synthetic.make_image_rows(n=40, seed=1, image_size=(8, 8))
    for pos, row in enumerate(rows):
        row["images"] = [{"bytes": bytes([pos]) * (2 * 2**20), "path": None}]
    to_dataset(rows).save_to_disk(str(tmp_path / "data"))
    size = 40 * 2 * 2**20

    ds = load_unified(str(tmp_path / "data"), validate=False)
    before = _rss_file()
    seen = [len(r["images"][0]["bytes"]) for r in raw_rows(ds)]
    released = _rss_file() - before
    assert seen == [2 * 2**20] * 40
    plain = datasets.load_from_disk(str(tmp_path / "data")).with_format("arrow")
    before = _rss_file()
    for start in range(0, 40, 8):
        plain[start:start + 8].to_pylist()
    kept = _rss_file() - before
    assert kept > 0.8 * size
    assert released < 0.1 * size
