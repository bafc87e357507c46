"""The unified loader (docs/protocol.md contract 2): every local source kind, subset/size, validation naming the row."""

from __future__ import annotations

import json

import datasets
import pytest

from medvlthinker.data import load_unified, save_unified, source_kind, to_dataset, validate_dataset
from medvlthinker.demo import synthetic
from medvlthinker.images import image_sha256
from medvlthinker.schema import SchemaError


def _jsonl_with_images(tmp_path, rows):
    """A jsonl file whose image entries are paths relative to its folder (images/ beside it)."""
    (tmp_path / "images").mkdir()
    with (tmp_path / "rows.jsonl").open("w") as fh:
        for row in rows:
            rel = []
            for k, img in enumerate(row["images"] or []):
                name = f"images/{row['dataset_index']}_{k}.png"
                img.save(tmp_path / name)
                rel.append(name)
            fh.write(json.dumps({**row, "images": rel or None}) + "\n")
    return tmp_path / "rows.jsonl"


def test_save_to_disk_dir_subset_size_and_features(eval_dataset_dir, eval_rows):
    ds = load_unified(str(eval_dataset_dir), subset=["slake_closed", "pmc_vqa"], size=5)
    assert len(ds) == 5
    assert set(ds["dataset_name"]) <= {"slake_closed", "pmc_vqa"}
    assert ds.features["dataset_index"] == datasets.Value("int64")
    assert isinstance(ds.features["images"], datasets.Sequence | datasets.List)
    first = ds[0]
    want = next(r for r in eval_rows if r["dataset_index"] == first["dataset_index"])
    assert image_sha256(first["images"][0]) == image_sha256(want["images"][0])


def test_subset_unknown_name_lists_available(eval_dataset_dir):
    with pytest.raises(ValueError, match=r"subset \['nope'\] not found.*pmc_vqa"):
        load_unified(str(eval_dataset_dir), subset=["nope"])


def test_jsonl_relative_images_parquet_roundtrip(tmp_path, eval_rows):
    rows = eval_rows[:6]
    src = _jsonl_with_images(tmp_path, rows)
    assert source_kind(src) == "jsonl"
    ds = load_unified(str(src), check_images=True)
    assert ds["dataset_index"] == [r["dataset_index"] for r in rows]
    assert image_sha256(ds[0]["images"][0]) == image_sha256(rows[0]["images"][0])
    # parquet written by save_unified embeds the path-referenced images, so it stands alone
    out = save_unified(ds, tmp_path / "out" / "eval.parquet")
    (tmp_path / "images" / f"{rows[0]['dataset_index']}_0.png").unlink()
    back = load_unified(str(out), check_images=True)
    assert len(back) == 6 and back[0]["question"] == rows[0]["question"]
    assert image_sha256(back[0]["images"][0]) == image_sha256(rows[0]["images"][0])


def test_text_only_parquet_without_optional_columns(tmp_path):
    rows = synthetic.make_text_rows(n=3, seed=5)
    slim = [{k: r[k] for k in ("question", "options", "answer_label", "answer", "dataset_name", "dataset_index")}
            for r in rows]
    path = tmp_path / "m23k.parquet"
    datasets.Dataset.from_list(slim).to_parquet(str(path))
    ds = load_unified(str(path))
    assert ds[0]["images"] is None and ds[0]["reasoning"] is None and ds[0]["misc"] is None
    assert ds.column_names[:10] == ["images", "question", "options", "answer_label", "answer", "reasoning",
                                    "dataset_name", "dataset_index", "hash", "misc"]


def test_datasetdict_split(tmp_path):
    dd = datasets.DatasetDict({
        "train": to_dataset(synthetic.make_text_rows(n=2, seed=1)),
        "test": to_dataset(synthetic.make_text_rows(n=3, seed=2)),
    })
    dd.save_to_disk(str(tmp_path / "dd"))
    assert len(load_unified(str(tmp_path / "dd"))) == 3  # test preferred
    assert len(load_unified(str(tmp_path / "dd"), "train")) == 2
    with pytest.raises(ValueError, match="no split 'dev'"):
        load_unified(str(tmp_path / "dd"), "dev")


def test_bad_answer_names_row_and_source(tmp_path):
    rows = synthetic.make_text_rows(n=4, seed=3, dataset_name="medqa")
    rows[2]["answer"] = "not an option"
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SchemaError, match=r"dataset_name='medqa', dataset_index=2.*differs.*bad\.jsonl"):
        load_unified(str(path))
    assert len(load_unified(str(path), validate=False)) == 4


def test_unreadable_image_names_row(tmp_path, eval_rows):
    rows = [dict(r) for r in eval_rows[:3]]
    rows[1]["images"] = [{"bytes": b"not a png at all", "path": None}]
    ds = to_dataset(rows)
    validate_dataset(ds)  # the schema alone is fine
    with pytest.raises(SchemaError, match=r"dataset_index=1.*cannot be decoded"):
        validate_dataset(ds, check_images=True)
    save_unified(ds, tmp_path / "bad")
    with pytest.raises(SchemaError, match=r"dataset_index=1"):
        load_unified(str(tmp_path / "bad"), check_images=True)


def test_missing_required_column_and_missing_path(tmp_path):
    path = tmp_path / "x.parquet"
    datasets.Dataset.from_list([{"question": "q", "dataset_index": 0}]).to_parquet(str(path))
    with pytest.raises(SchemaError, match=r"lacks the column\(s\) \['options'"):
        load_unified(str(path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_unified(str(tmp_path / "missing.jsonl"))


def test_duplicate_index_rejected(tmp_path):
    rows = synthetic.make_text_rows(n=3, seed=3)
    rows[2]["dataset_index"] = 0
    with pytest.raises(SchemaError, match="duplicate dataset_index 0"):
        validate_dataset(to_dataset(rows))
