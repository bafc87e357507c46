"""The verl RL parquet converter (docs/protocol.md contract 5), read back through verl's own RLHFDataset and the tiny processor."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from medvlthinker import prompts
from medvlthinker.converters.verl_format import check_verl_parquet, convert_to_verl, write_verl_parquet
from medvlthinker.data import to_dataset
from medvlthinker.demo import synthetic
from medvlthinker.schema import SchemaError


@pytest.fixture(scope="module")
def rl_rows(train_image_rows, train_text_rows):
    # multi-image rows from the eval generator (MMMU-medical has 2 images a row) exercise the placeholder split
    multi = [r for r in synthetic.make_eval_rows(rows_per_benchmark=2, seed=3) if len(r["images"]) == 2][:2]
    for i, row in enumerate(multi):
        row["dataset_index"] = 500 + i
    return train_image_rows[:3] + train_text_rows[:2] + multi


@pytest.fixture(scope="module")
def rl_parquet(tmp_path_factory, rl_rows):
    ds = to_dataset(rl_rows)
    path = tmp_path_factory.mktemp("verl") / "train.parquet"
    write_verl_parquet(convert_to_verl(ds), path)
    return path


def test_parquet_columns_follow_contract(rl_parquet, rl_rows):
    table = pq.read_table(rl_parquet).to_pylist()
    assert check_verl_parquet(rl_parquet) == len(rl_rows)
    for i, (out, row) in enumerate(zip(table, rl_rows)):
        assert out["data_source"] == row["dataset_name"]
        assert out["ability"] == "medical_mcqa"
        assert out["prompt"] == [{"role": "user", "content": prompts.build_verl_prompt(row)}]
        assert len(out["images"]) == prompts.num_images(row)
        assert out["reward_model"] == {"style": "rule", "ground_truth": row["answer"]}
        assert out["extra_info"] == {
            "answer": row["answer"], "answer_label": row["answer_label"], "options": row["options"],
            "dataset_name": row["dataset_name"], "dataset_index": row["dataset_index"], "index": i, "split": "train",
        }


def test_rlhf_dataset_renders_the_eval_prompt(rl_parquet, rl_rows, tiny_model_dir, tiny_processor, tmp_path):
    """verl's messages, rendered by the chat template, equal the eval/SFT messages of the same row."""
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    cfg = OmegaConf.create({"prompt_key": "prompt", "image_key": "images", "max_prompt_length": 2048,
                            "filter_overlong_prompts": False, "cache_dir": str(tmp_path)})
    dataset = RLHFDataset([str(rl_parquet)], tiny_processor.tokenizer, cfg, tiny_processor)
    assert len(dataset) == len(rl_rows)
    for i, row in enumerate(rl_rows):
        item = dataset[i]
        messages = item["raw_prompt"]
        rendered = tiny_processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        expected = tiny_processor.apply_chat_template(prompts.build_messages(row), add_generation_prompt=True,
                                                      tokenize=False)
        assert rendered == expected
        assert rendered.count("<|vision_start|>") == prompts.num_images(row)
        assert rendered.endswith("<|im_start|>assistant\n")
        assert item["extra_info"]["dataset_index"] == row["dataset_index"]
        if prompts.num_images(row):
            images, _, _ = dataset._process_multi_modal_info(messages, dataset.image_patch_size, cfg)
            assert len(images) == prompts.num_images(row)
            assert images[0].size[0] % 28 == 0  # qwen-vl-utils resized it to whole merged patches


def test_order_is_kept_and_bad_rows_are_named(train_text_rows):
    rows = list(reversed(train_text_rows[:4]))
    out = convert_to_verl(to_dataset(rows))
    assert [r["dataset_index"] for r in out["extra_info"]] == [r["dataset_index"] for r in rows]
    bad = dict(train_text_rows[0], answer="not an option")
    with pytest.raises(SchemaError, match=r"dataset_index=0.*differs from options"):
        convert_to_verl(to_dataset([bad]))


def test_written_file_is_atomic_and_not_overwritten(tmp_path, train_text_rows):
    ds = convert_to_verl(to_dataset(train_text_rows[:2]))
    path = write_verl_parquet(ds, tmp_path / "a.parquet")
    with pytest.raises(FileExistsError):
        write_verl_parquet(ds, path)
    assert not list(tmp_path.glob(".*partial"))
    assert json.loads(pq.read_table(path).to_pylist()[0]["extra_info"]["options"])


def test_images_are_encoded_as_the_originals_converter_encodes_them(train_image_rows):
    # The original builds its parquet from PIL images, so datasets re-encodes a JPEG at quality 75; the project's
    # stored-bytes behaviour is the --keep_image_bytes opt-in.
    import io

    from datasets.features.image import image_to_bytes
    from PIL import Image

    from medvlthinker.converters.verl_format import to_verl_example

    buf = io.BytesIO()
    synthetic.draw_image("red", "circle", (64, 48), 3).save(buf, format="JPEG", quality=95)
    jpeg = buf.getvalue()
    row = dict(train_image_rows[0], images=[{"bytes": jpeg, "path": None}])
    stored = to_verl_example(row, 0)["images"][0]["bytes"]
    assert stored == image_to_bytes(Image.open(io.BytesIO(jpeg))) != jpeg
    assert Image.open(io.BytesIO(stored)).format == "JPEG"
    assert to_verl_example(row, 0, keep_image_bytes=True)["images"][0]["bytes"] == jpeg
