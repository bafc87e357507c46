"""Raw PMC-VQA and m23k-style sources -> unified rows: resize rule, malformed-row handling, resume, determinism."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import datasets
import pytest
from click.testing import CliRunner
from PIL import Image

from medvlthinker.data import load_unified
from medvlthinker.images import image_sha256, pmc_resize
from medvlthinker.prepare import PrepareError, m23k_row, prepare_m23k, prepare_pmc_vqa, strip_choice_prefix

ROOT = Path(__file__).resolve().parents[1]

# (width, height) -> size after the PMC-VQA rule
EDGE_SIZES = {
    (10, 2000): (28, 5600),  # the short-side rule wins and the long side passes 1024, as in the original
    (27, 27): (28, 28),
    (1024, 1025): (1023, 1024),
    (3000, 3000): (1024, 1024),
    (2000, 10): (5600, 28),
    (64, 48): (64, 48),  # untouched
}


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "data_process" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _digest(path: Path) -> dict[str, str]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.mark.parametrize("size,expected", list(EDGE_SIZES.items()) + [
    ((1500, 1000), (1024, 682)),  # int(1000 * (1024 / 1500)) = 682, as the original (round() would give 683)
    ((27, 100), (28, 103)),  # int(100 * (28 / 27)) = 103 (round: 104)
])
def test_pmc_resize_edge_sizes(size, expected):
    img = Image.new("RGB", size, (200, 10, 10))
    out = pmc_resize(img)
    assert out.size == expected
    assert (out is img) == (size == expected)
    assert out.getpixel((out.size[0] // 2, out.size[1] // 2)) == (200, 10, 10)  # bilinear keeps a flat colour


def _choice(letter, text, style):
    return {0: f"{letter}: {text}", 1: f" {letter}:{text}", 2: text}[style]


@pytest.fixture(scope="module")
def pmc_raw(tmp_path_factory):
    """A PMC-VQA-shaped CSV + figure folder: the edge sizes, one broken image, one missing image, bad labels."""
    root = tmp_path_factory.mktemp("pmc_raw")
    figures = root / "figures"
    figures.mkdir()
    records = []

    def add(figure, label="B", answer=None, choice_d="Ultrasound", question=None):
        texts = ["CT", "MRI", "X-ray", choice_d]
        i = len(records)
        records.append({
            "Figure_path": figure,
            "Question": question if question is not None else f"Which modality is shown in figure {i}?",
            "Answer": answer if answer is not None else texts["ABCD".index(label)] if label in "ABCD" else "CT",
            **{f"Choice {c}": _choice(c, t, i % 3) for c, t in zip("ABCD", texts)},
            "Answer_label": label,
        })

    for k, (w, h) in enumerate(EDGE_SIZES):
        name = f"PMC{k}_{w}x{h}.{'jpg' if k % 2 else 'png'}"
        Image.new("RGB", (w, h), (30 * k, 100, 150)).save(figures / name)
        add(name, label="ABCD"[k % 4])
    (figures / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    add("broken.jpg")
    add("missing.png")
    add("PMC0_10x2000.png", label="E")  # Answer_label outside A-D
    add("PMC4_2000x10.jpg", choice_d="")  # empty choice
    add("PMC5_64x48.jpg", label="C", answer=" C:X-ray")  # Answer with the letter prefix: same text, no warning
    add("PMC5_64x48.jpg", label="A", answer="Computed tomography")  # Answer text differs from the choice: warning
    csv_path = root / "train.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    return csv_path, figures, records


def test_prepare_pmc_vqa_original_rows_and_indices(tmp_path):
    """The default keeps the rows of the original's prepare_pmc_vqa.py, indexed by the count of kept rows, so the
    output joins with the released UCSC-VLAA/MedVLThinker-pmc_vqa on dataset_index."""
    figures = tmp_path / "figures"
    figures.mkdir()
    Image.new("RGB", (64, 48), (10, 20, 30)).save(figures / "small.png")
    Image.new("RGB", (1500, 1000), (10, 20, 30)).save(figures / "wide.png")
    good = {"Figure_path": "small.png", "Question": "Which modality?", "Answer": "MRI", "Answer_label": "B",
            "Choice A": " A:CT", "Choice B": " B:MRI ", "Choice C": "C:\"PET\"", "Choice D": " D: Ultrasound"}
    records = [
        {**good, "Question": "'Which modality?'\xa0"},  # quotes and no-break spaces are stripped too: index 0
        {**good, "Choice C": "PET"},  # a choice without its "C:" prefix: dropped
        {**good, "Answer": "Magnetic resonance"},  # the Answer text is not the chosen option: dropped
        good,  # index 1
        {**good, "Figure_path": "missing.png"},  # the image cannot be read: index 2 stays a gap
        {**good, "Figure_path": "wide.png"},  # index 3, resized with the original's int(): 1024 x 682
    ]
    csv_path = tmp_path / "train.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(good))
        writer.writeheader()
        writer.writerows(records)

    report = prepare_pmc_vqa(csv_path, figures, tmp_path / "original", chunk_size=2)
    assert report.malformed == {"answer_mismatch": 1, "choice_without_prefix": 1, "image_missing": 1}
    ds = load_unified(str(tmp_path / "original"), check_images=True)
    assert ds["dataset_index"] == [0, 1, 3]
    assert ds["question"] == ["Which modality?"] * 3
    assert json.loads(ds[0]["options"]) == {"A": "CT", "B": "MRI", "C": "PET", "D": "Ultrasound"}
    assert ds[2]["images"][0].size == (1024, 682)

    lenient = prepare_pmc_vqa(csv_path, figures, tmp_path / "lenient", compat="lenient")
    assert lenient.malformed == {"image_missing": 1} and lenient.warnings == {"answer_text_differs_from_choice": 1}
    assert load_unified(str(tmp_path / "lenient"))["dataset_index"] == [0, 1, 2, 3, 5]


def test_prepare_pmc_vqa_rows_resize_and_report(pmc_raw, tmp_path):
    csv_path, figures, records = pmc_raw
    out = tmp_path / "pmc"
    report = prepare_pmc_vqa(csv_path, figures, out, chunk_size=4, compat="lenient")
    assert report.rows_read == 12 and report.rows_written == 8 and report.skipped == 4
    assert report.malformed == {"bad_answer_label": 1, "empty_option": 1, "image_missing": 1, "image_undecodable": 1}
    assert report.warnings == {"answer_text_differs_from_choice": 1}
    assert report.resized == 5
    assert {e["source_row"] for e in report.examples} == {6, 7, 8, 9}
    assert "malformed, image_undecodable: 1" in report.summary() and "broken.jpg" in report.summary()
    saved = json.loads(out.with_name("pmc.report.json").read_text())
    assert saved["skipped"] == 4 and saved["malformed"]["bad_answer_label"] == 1

    ds = load_unified(str(out), check_images=True)  # the loader's full schema check, images decoded
    assert ds["dataset_index"] == [0, 1, 2, 3, 4, 5, 10, 11]
    sizes = [img.size for img in (row["images"][0] for row in ds)]
    assert sizes[:6] == list(EDGE_SIZES.values())
    assert json.loads(ds[1]["options"]) == {"A": "CT", "B": "MRI", "C": "X-ray", "D": "Ultrasound"}  # " A:CT" form
    assert [r["answer"] for r in ds.select(range(4))] == ["CT", "MRI", "X-ray", "Ultrasound"]
    # an image the rule leaves alone is stored as the file's own bytes; the hash is of the source pixels
    raw = ds.with_format("arrow")[5]["images"][0].as_py()[0]
    assert raw["bytes"] == (figures / "PMC5_64x48.jpg").read_bytes()
    assert ds[0]["hash"] == image_sha256(figures / "PMC0_10x2000.png")
    misc = [json.loads(m) for m in ds["misc"]]
    assert misc[0]["source_size"] == [10, 2000] and "source_size" not in misc[5]
    assert misc[7]["source_answer"] == "Computed tomography" and "source_answer" not in misc[6]


def test_prepare_pmc_vqa_fail_mode_names_the_row(pmc_raw, tmp_path):
    csv_path, figures, _ = pmc_raw
    with pytest.raises(PrepareError, match=r"source row 6: image_undecodable: broken.jpg.*--on_error skip"):
        prepare_pmc_vqa(csv_path, figures, tmp_path / "out", on_error="fail", compat="lenient")


def test_missing_csv_column_is_fatal(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("Figure_path,Question\nx.png,Q\n")
    with pytest.raises(PrepareError, match=r"missing column\(s\) \['Answer', 'Choice A'"):
        prepare_pmc_vqa(bad, tmp_path, tmp_path / "out")


@pytest.mark.parametrize("name", ["pmc", "pmc.parquet"])
def test_prepare_pmc_vqa_is_deterministic_and_resumes(pmc_raw, tmp_path, name):
    csv_path, figures, _ = pmc_raw
    first, second = tmp_path / "a" / name, tmp_path / "b" / name
    prepare_pmc_vqa(csv_path, figures, first, chunk_size=5)
    prepare_pmc_vqa(csv_path, figures, second, chunk_size=5)
    assert _digest(first) == _digest(second)
    # resume: drop one finished chunk and the output; the re-run rebuilds just that chunk, same bytes
    chunks = sorted(first.with_name(name + ".chunks").glob("rows-*.parquet"))
    assert len(chunks) == 3
    kept_mtime = chunks[0].stat().st_mtime_ns
    chunks[1].unlink()
    shutil.rmtree(first) if first.is_dir() else first.unlink()
    prepare_pmc_vqa(csv_path, figures, first, chunk_size=5)
    assert chunks[0].stat().st_mtime_ns == kept_mtime and chunks[1].exists()
    assert _digest(first) == _digest(second)
    with pytest.raises(PrepareError, match="other settings"):
        prepare_pmc_vqa(csv_path, figures, first, chunk_size=4)


def test_prepare_pmc_vqa_workers_give_the_same_output(pmc_raw, tmp_path):
    csv_path, figures, _ = pmc_raw
    prepare_pmc_vqa(csv_path, figures, tmp_path / "one.parquet")
    prepare_pmc_vqa(csv_path, figures, tmp_path / "two.parquet", num_proc=2)
    assert (tmp_path / "one.parquet").read_bytes() == (tmp_path / "two.parquet").read_bytes()


def test_prepare_pmc_vqa_script(pmc_raw, tmp_path):
    csv_path, figures, _ = pmc_raw
    result = CliRunner().invoke(
        _script("prepare_pmc_vqa").main,
        ["--csv_path", str(csv_path), "--image_dir", str(figures), "--output", str(tmp_path / "o.parquet"), "--limit", "7",
         "--compat", "lenient"],
    )
    assert result.exit_code == 0, result.output
    assert "read 7 rows, wrote 6, skipped 1 malformed" in result.output
    assert len(datasets.Dataset.from_parquet(str(tmp_path / "o.parquet"))) == 6
    result = CliRunner().invoke(
        _script("prepare_pmc_vqa").main,
        ["--csv_path", str(csv_path), "--image_dir", str(figures), "--output", str(tmp_path / "f"), "--on_error", "fail",
         "--compat", "lenient"],
    )
    assert result.exit_code == 1 and "source row 6" in result.output


def test_strip_choice_prefix_only_strips_its_own_letter():
    assert strip_choice_prefix(" A:Left lung", "A") == "Left lung"
    assert strip_choice_prefix("A: Left lung ", "A") == "Left lung"
    assert strip_choice_prefix("Left lung", "A") == "Left lung"
    assert strip_choice_prefix("B: 3 cm", "A") == "B: 3 cm"


# --------------------------------------------------------------------------------------------------------- m23k
M23K_RECORDS = [
    # released form: JSON options, answer_idx alias, a source column
    {"question": "Q0: first-line drug?", "options": json.dumps({"A": "Aspirin", "B": "Heparin", "C": "Statin", "D": "Insulin"}),
     "answer_idx": "B", "answer": "Heparin", "reasoning": "Because of the clot.", "source": "MedQA"},
    {"question": "Q1: which nerve?", "options": json.dumps({"A": "Vagus", "B": "Facial", "C": "Optic", "D": "Ulnar"}),
     "answer_idx": "D", "answer": "Ulnar ", "reasoning": "The hand.", "source": "MedMCQA"},
    # malformed: the label is not an option; the answer text disagrees; no question
    {"question": "Q2", "options": json.dumps({"A": "x", "B": "y", "C": "z", "D": "w"}), "answer_idx": "E",
     "answer": "x", "reasoning": "r", "source": "HeadQA"},
    {"question": "Q3", "options": json.dumps({"A": "x", "B": "y", "C": "z", "D": "w"}), "answer_idx": "A",
     "answer": "y", "reasoning": "r", "source": "HeadQA"},
    {"question": " ", "options": json.dumps({"A": "x", "B": "y", "C": "z", "D": "w"}), "answer_idx": "A",
     "answer": "x", "reasoning": "r", "source": "HeadQA"},
    {"question": "Q5: yes or no?", "options": json.dumps({"A": "yes", "B": "no", "C": "maybe"}), "answer_idx": "C",
     "answer": "maybe", "reasoning": "Unclear evidence.", "source": "PubMedQA"},
]


@pytest.fixture(scope="module")
def m23k_jsonl(tmp_path_factory):
    path = tmp_path_factory.mktemp("m23k") / "m23k.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in M23K_RECORDS))
    return path


def test_prepare_m23k_maps_columns_and_reports_malformed(m23k_jsonl):
    ds, report = prepare_m23k(m23k_jsonl)
    assert report.rows_read == 6 and report.rows_written == 3
    assert report.malformed == {"answer_mismatch": 1, "bad_answer_label": 1, "empty_question": 1}
    assert ds["dataset_index"] == [0, 1, 5] and set(ds["dataset_name"]) == {"m23k"}
    assert ds["answer_label"] == ["B", "D", "C"] and ds["answer"] == ["Heparin", "Ulnar", "maybe"]
    assert ds["images"] == [None, None, None] and ds["reasoning"][0] == "Because of the clot."
    assert json.loads(ds["misc"][0]) == {"source": "MedQA"}
    with pytest.raises(PrepareError, match=r"source row 2: bad_answer_label: answer_idx 'E'"):
        prepare_m23k(m23k_jsonl, on_error="fail")


def test_prepare_m23k_accepts_unified_columns_dict_and_struct_options(tmp_path):
    # unified columns with a dict options column: Arrow stores it as a struct holding every key, absent ones None
    rows = [
        {"question": "Q", "options": {"A": "1", "B": "2", "C": "3", "D": "4", "E": "5"}, "answer_label": "E",
         "answer": "5", "reasoning": "r", "dataset_name": "m23k", "dataset_index": 70},
        {"question": "Q'", "options": {"A": "1", "B": "2", "C": "3", "D": "4"}, "answer_label": "A", "answer": "1",
         "reasoning": "r", "dataset_name": "m23k", "dataset_index": 71},
        {"question": "Q''", "options": {"A": "1", "B": "2", "C": "3", "D": "4"}, "answer_label": "C", "answer": None,
         "reasoning": None, "dataset_name": "m23k", "dataset_index": 72},
    ]
    path = tmp_path / "struct.parquet"
    datasets.Dataset.from_list(rows).to_parquet(str(path))
    ds, report = prepare_m23k(path)
    assert report.skipped == 0
    assert [json.loads(o) for o in ds["options"]][1] == {"A": "1", "B": "2", "C": "3", "D": "4"}
    assert ds["dataset_index"] == [70, 71, 72] and ds["answer_label"] == ["E", "A", "C"] and ds["answer"][2] == "3"
    _, strict = prepare_m23k(path, require_reasoning=True)
    assert strict.malformed == {"missing_reasoning": 1}
    # an int answer_idx is a 0-based option index; options may also be a list
    row = m23k_row({"question": "Q", "options": ["a", "b", "c"], "answer_idx": 1}, 4, start_index=100)
    assert (row["answer_label"], row["answer"], row["dataset_index"], row["options"]) == ("B", "b", 104, '{"A": "a", "B": "b", "C": "c"}')


def test_prepare_m23k_script_is_deterministic(m23k_jsonl, tmp_path):
    main = _script("prepare_m23k").main
    for run in ("a", "b"):
        result = CliRunner().invoke(main, ["--source", str(m23k_jsonl), "--output", str(tmp_path / run / "m23k")])
        assert result.exit_code == 0, result.output
        assert "skipped 3 malformed" in result.output and "e.g. source row 2" in result.output
    assert _digest(tmp_path / "a" / "m23k") == _digest(tmp_path / "b" / "m23k")
    assert (tmp_path / "a" / "m23k.report.json").read_bytes() != b""
    loaded = load_unified(str(tmp_path / "a" / "m23k"))
    assert len(loaded) == 3
