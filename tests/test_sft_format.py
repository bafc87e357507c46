"""The SFT converter (docs/protocol.md contract 4): unified rows -> TRL conversational prompt-completion rows with images."""

from __future__ import annotations

import io
import json

import datasets
import pytest
from PIL import Image

from medvlthinker import prompts
from medvlthinker.converters.sft_format import check_sft_dataset, convert_to_sft, to_sft_example, write_sft_dataset
from medvlthinker.data import to_dataset
from medvlthinker.images import image_sha256
from medvlthinker.schema import SchemaError


def _text(turns):
    return [part.get("text") for part in turns[0]["content"] if part["type"] == "text"]


def test_text_row_prompt_completion_and_no_images(train_text_rows):
    row = train_text_rows[0]
    ex = to_sft_example(row)
    assert ex["prompt"][0]["role"] == "user" and ex["completion"][0]["role"] == "assistant"
    assert [p["type"] for p in ex["prompt"][0]["content"]] == ["text"]
    assert _text(ex["prompt"]) == [prompts.build_user_text(row["question"], row["options"])]
    assert _text(ex["completion"]) == [
        f"<think> {row['reasoning']} </think>\n<answer> {row['answer_label']} </answer>"
    ]
    assert ex["images"] == []
    assert (ex["dataset_name"], ex["dataset_index"]) == (row["dataset_name"], row["dataset_index"])


def test_dataset_round_trip_keeps_images_in_order(tmp_path, eval_rows, train_text_rows):
    # MMMU-shaped rows carry two images each; their order and pixels must survive the conversion and save.
    two_image_rows = [r for r in eval_rows if r["dataset_name"] == "MMMU-medical"][:2]
    # copies: the fixtures are shared by the whole session
    rows = [dict(r, dataset_index=100 + i) for i, r in enumerate(two_image_rows + train_text_rows[:2])]
    sft = convert_to_sft(to_dataset(rows), keep_image_bytes=True)
    path = write_sft_dataset(sft, tmp_path / "sft")
    back = datasets.load_from_disk(str(path))
    check_sft_dataset(back)
    assert back.column_names == ["prompt", "completion", "images", "dataset_name", "dataset_index"]
    for row, ex in zip(rows, back):
        n = len(row["images"] or [])
        assert [p["type"] for p in ex["prompt"][0]["content"]] == ["image"] * n + ["text"]
        assert [image_sha256(a) for a in ex["images"]] == [image_sha256(b) for b in row["images"] or []]
        assert ex["dataset_index"] == row["dataset_index"]
    with pytest.raises(FileExistsError, match="overwrite"):
        write_sft_dataset(sft, path)
    assert write_sft_dataset(sft.select([0]), path, overwrite=True) == path
    assert len(datasets.load_from_disk(str(path))) == 1


def test_missing_reasoning_names_the_row(train_text_rows):
    row = dict(train_text_rows[3], reasoning=None)
    with pytest.raises(SchemaError, match=r"dataset_name='m23k', dataset_index=3.*no reasoning"):
        to_sft_example(row)


def test_invalid_row_is_rejected_with_its_index(train_text_rows):
    row = dict(train_text_rows[2], answer_label="Z")
    with pytest.raises(SchemaError, match=r"dataset_index=2.*answer_label 'Z'"):
        convert_to_sft(to_dataset([row]))


def test_resize_pmc_applies_the_training_image_rule(train_image_rows):
    row = dict(train_image_rows[0], images=[Image.new("RGB", (2048, 512), (10, 20, 30))])
    kept = to_sft_example(row, keep_image_bytes=True)["images"][0]
    resized = to_sft_example(row, resize_pmc=True, keep_image_bytes=True)["images"][0]
    assert kept.size == (2048, 512)
    assert Image.open(io.BytesIO(resized["bytes"])).size == (1024, 256)


def test_check_sft_dataset_names_missing_columns():
    ds = datasets.Dataset.from_list([{"messages": json.dumps([])}])
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['prompt', 'completion', 'images'\].*convert_sft"):
        check_sft_dataset(ds, where="x")


def _load_script(relpath: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / relpath
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_converts_a_local_unified_dataset(tmp_path, train_image_rows, train_text_rows):
    pytest.importorskip("medvlthinker.data", reason="the data loader (contract 2) is not in this checkout yet")
    from click.testing import CliRunner

    src = tmp_path / "unified"
    to_dataset(train_image_rows[:3]).save_to_disk(str(src))
    out = tmp_path / "sft"
    script = _load_script("data_process/convert_sft_format.py")
    result = CliRunner().invoke(script.main, [str(src), str(out), "--size", "2"])
    assert result.exit_code == 0, result.output
    assert "wrote 2 SFT examples (2 with images)" in result.output
    back = datasets.load_from_disk(str(out))
    assert back["dataset_index"] == [0, 1] and len(back[0]["images"]) == 1
    again = CliRunner().invoke(script.main, [str(src), str(out)])
    assert again.exit_code == 1 and "overwrite" in again.output


def test_images_reach_the_processor_as_the_originals_qwen_vl_utils_step_gives_them(train_image_rows):
    # The original resizes every SFT image with qwen-vl-utils before the processor, which also pastes an RGBA
    # image on white; the stored pixels must be exactly fetch_image's, the stored bytes only with the opt-in.
    from qwen_vl_utils import fetch_image

    rgba = Image.new("RGBA", (90, 61), (255, 0, 0, 0))  # transparent pixels hiding red
    rgba.paste((0, 0, 255, 255), (10, 10, 40, 40))
    buf = io.BytesIO()
    rgba.save(buf, format="PNG")
    row = dict(train_image_rows[0], images=[{"bytes": buf.getvalue(), "path": None}])
    stored = Image.open(io.BytesIO(to_sft_example(row)["images"][0]["bytes"]))
    expected = fetch_image({"image": Image.open(io.BytesIO(buf.getvalue()))})
    assert stored.size == expected.size == (84, 56)
    assert stored.tobytes() == expected.tobytes()
    assert stored.getpixel((0, 0)) == (255, 255, 255)
    assert to_sft_example(row, keep_image_bytes=True)["images"][0]["bytes"] == buf.getvalue()
