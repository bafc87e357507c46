"""Model directories that need no download: the real Qwen2.5 tokenizer, the real architectures, a tiny random model.

- ``build_qwen_tokenizer``: the Qwen2.5 byte-level BPE rebuilt offline from the 151,643 ranks that ship inside the
  PyPI package ``dashscope`` (``dashscope/resources/qwen.tiktoken``), plus the 22 added tokens from id 151643.
  The ids equal the official ones (``<|im_start|>`` 151644, ``<|image_pad|>`` 151655, "Hello world!" ->
  [9707, 1879, 0]).
- ``architecture_config(size)``: the Hugging Face ``config.json`` of Qwen2.5-VL 3B/7B/32B (architecture facts
  only), for dummy-weight benchmarking on a GPU (``configs/models/``).
- ``build_tiny_model``: a random Qwen2.5-VL small enough for CPU tests (hidden 128, head_dim 64, 2 layers) saved
  as a normal model directory (config, safetensors, processor with the Qwen2-VL image processor, the real chat
  template) that transformers, TRL, verl and vLLM's CPU build all load.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

from medvlthinker.images import MAX_PIXELS, MIN_PIXELS

# The Qwen2 pre-tokenizer split pattern (digits one at a time).
QWEN2_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
NUM_BPE_RANKS = 151643
# Added tokens in id order from 151643; the second field says whether the official tokenizer marks it special.
QWEN_ADDED_TOKENS: list[tuple[str, bool]] = [
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True),
    ("<|quad_start|>", True), ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True),
    ("<|vision_pad|>", True), ("<|image_pad|>", True), ("<|video_pad|>", True),
    ("<tool_call>", False), ("</tool_call>", False), ("<|fim_prefix|>", False), ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False), ("<|fim_pad|>", False), ("<|repo_name|>", False), ("<|file_sep|>", False),
]
VOCAB_SIZE = 151936  # the embedding size of every Qwen2.5-VL checkpoint (padded past the 151,665 tokens)

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# Text-tower facts per size (shared/gpu/README.md); the vision tower is the same for all.
ARCHITECTURES = {
    "3b": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
               num_key_value_heads=2, tie_word_embeddings=True),
    "7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
               num_key_value_heads=4, tie_word_embeddings=False),
    "32b": dict(hidden_size=5120, intermediate_size=27648, num_hidden_layers=64, num_attention_heads=40,
                num_key_value_heads=8, tie_word_embeddings=False),
    # Tiny random model for CPU tests: head_dim 64 (vLLM's CPU attention rejects 16), 1 KV head.
    "tiny": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, tie_word_embeddings=True),
}
VISION = {
    "full": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16,
                 fullatt_block_indexes=[7, 15, 23, 31]),
    "tiny": dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=1, fullatt_block_indexes=[1]),
}


def chat_template() -> str:
    """The Qwen2.5-VL-Instruct chat template (adds the default system turn when the first message is not one)."""
    return resources.files("medvlthinker").joinpath("resources/qwen2_5_vl_chat_template.jinja").read_text()


# Not staging.staged, which replaces the target: test workers build the same model at once, and the first complete
# copy must win, since another worker may already be reading it.
def _atomic_dir(target: Path):
    """A temporary sibling directory renamed onto ``target`` when the build succeeds (safe under concurrency)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))


def _publish(tmp: Path, target: Path) -> Path:
    try:
        os.rename(tmp, target)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def qwen_tiktoken_path() -> Path:
    try:
        import dashscope
    except ImportError as e:  # pragma: no cover - environment problem
        raise RuntimeError("the Qwen2.5 BPE ranks come from the PyPI package `dashscope`: pip install dashscope") from e
    path = Path(dashscope.__file__).parent / "resources" / "qwen.tiktoken"
    if not path.exists():
        raise RuntimeError(f"{path} is missing; this dashscope release no longer ships the Qwen BPE ranks")
    return path


def build_qwen_tokenizer(out_dir: str | os.PathLike | None = None):
    """The Qwen2.5 tokenizer (transformers ``Qwen2Tokenizer``); saved to ``out_dir`` when given."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import TikTokenConverter

    vocab, merges = TikTokenConverter(vocab_file=str(qwen_tiktoken_path()), pattern=QWEN2_PATTERN) \
        .extract_vocab_merges_from_model(str(qwen_tiktoken_path()))
    if len(vocab) != NUM_BPE_RANKS:
        raise RuntimeError(f"expected {NUM_BPE_RANKS} BPE ranks, found {len(vocab)}")
    # The constructor registers its special tokens at once, so name only <|endoftext|> (id 151643) there and
    # point eos at <|im_end|> after every added token has its official id.
    tok = Qwen2Tokenizer(
        vocab=vocab, merges=merges, unk_token=None, bos_token=None, eos_token="<|endoftext|>",
        pad_token="<|endoftext|>", model_max_length=131072, errors="replace",
    )
    for text, special in QWEN_ADDED_TOKENS:
        tok.add_tokens([AddedToken(text, special=special, normalized=False)], special_tokens=special)
    tok.eos_token = "<|im_end|>"
    for i, (text, _) in enumerate(QWEN_ADDED_TOKENS):
        got = tok.convert_tokens_to_ids(text)
        if got != NUM_BPE_RANKS + i:
            raise RuntimeError(f"added token {text} got id {got}, expected {NUM_BPE_RANKS + i}")
    tok.chat_template = chat_template()
    if out_dir is not None:
        tok.save_pretrained(out_dir)
    return tok


def architecture_config(size: str) -> dict:
    """``config.json`` content (the released checkpoints' layout) for ``size`` in 3b, 7b, 32b, tiny."""
    text = ARCHITECTURES[size]
    vision = VISION["tiny" if size == "tiny" else "full"]
    return {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "model_type": "qwen2_5_vl",
        "vocab_size": VOCAB_SIZE,
        **text,
        "hidden_act": "silu",
        "max_position_embeddings": 128000,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24] if size != "tiny" else [8, 12, 12]},
        "attention_dropout": 0.0,
        "use_sliding_window": False,
        "sliding_window": 32768,
        "max_window_layers": text["num_hidden_layers"],
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "image_token_id": 151655,
        "video_token_id": 151656,
        "vision_start_token_id": 151652,
        "vision_end_token_id": 151653,
        "vision_token_id": 151654,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "vision_config": {
            **vision,
            "hidden_act": "silu",
            "in_chans": 3,
            "out_hidden_size": text["hidden_size"],
            "patch_size": 14,
            "spatial_merge_size": 2,
            "spatial_patch_size": 14,
            "temporal_patch_size": 2,
            "window_size": 112,
            "tokens_per_second": 2,
        },
    }


def preprocessor_config() -> dict:
    return {
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2_5_VLProcessor",
        "do_resize": True,
        "do_rescale": True,
        "do_normalize": True,
        "do_convert_rgb": True,
        "rescale_factor": 0.00392156862745098,
        "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD,
        "min_pixels": MIN_PIXELS,
        "max_pixels": MAX_PIXELS,
        "patch_size": 14,
        "merge_size": 2,
        "temporal_patch_size": 2,
    }


def write_config_only_model(size: str, out_dir: str | os.PathLike, with_tokenizer: bool = True) -> Path:
    """A model directory without weights (for ``load_format="dummy"`` in vLLM or ``_from_config`` in transformers)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(architecture_config(size), indent=2) + "\n")
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(), indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 151643, "eos_token_id": [151645, 151643], "pad_token_id": 151643}, indent=2) + "\n")
    (out / "chat_template.jinja").write_text(chat_template())
    if with_tokenizer:
        build_qwen_tokenizer(out)
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m medvlthinker.demo.tiny {3b,7b,32b,tiny} OUT_DIR [--no_tokenizer | --random_weights]``."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("size", choices=sorted(ARCHITECTURES))
    ap.add_argument("out_dir")
    ap.add_argument("--no_tokenizer", action="store_true", help="skip the 18 MB tokenizer.json")
    ap.add_argument("--random_weights", action="store_true",
                    help="tiny only: a complete model directory with random weights (the test and demo model)")
    args = ap.parse_args(argv)
    if args.random_weights:
        if args.size != "tiny":
            ap.error("--random_weights builds only the tiny model (benchmark the real sizes with dummy weights)")
        print(build_tiny_model(args.out_dir))
        return
    print(write_config_only_model(args.size, args.out_dir, with_tokenizer=not args.no_tokenizer))


def build_tiny_model(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Build (once) a tiny random Qwen2.5-VL model directory at ``out_dir``; returns the path."""
    target = Path(out_dir)
    if (target / "model.safetensors").exists():
        return target
    import torch
    from transformers import AutoProcessor, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tmp = _atomic_dir(target)
    write_config_only_model("tiny", tmp)
    config = Qwen2_5_VLConfig.from_pretrained(tmp)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32)
    model.generation_config.eos_token_id = [151645, 151643]
    model.generation_config.pad_token_id = 151643
    model.save_pretrained(tmp)
    AutoProcessor.from_pretrained(tmp).save_pretrained(tmp)
    return _publish(tmp, target)


def default_cache_dir() -> Path:
    """Where built fixtures are cached: ``$MEDVLTHINKER_CACHE`` or ``.cache/`` at the repository root."""
    env = os.environ.get("MEDVLTHINKER_CACHE")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / ".cache"


def tiny_model_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cached tiny model for the installed transformers version, built on first use."""
    import transformers

    base = Path(cache_dir) if cache_dir else default_cache_dir()
    return build_tiny_model(base / f"tiny-qwen2.5-vl-tf{transformers.__version__}")


if __name__ == "__main__":
    main()
