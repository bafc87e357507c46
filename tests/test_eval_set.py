"""The evaluation-set builder on local copies shaped like its sources: order, closed-only, PMC question cut, option
order and label from the written options, MMMU tag removal, MedXpertQA options A-E, index assignment, failures
reported, the options cache (a rerun makes no call)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import datasets
import pytest
from click.testing import CliRunner

from medvlthinker.cli import UserError
from medvlthinker.data import load_unified
from medvlthinker.demo import synthetic, vocabulary
from medvlthinker.prepare import eval_set, option_writer

ROOT = Path(__file__).resolve().parents[1]


def _png(colour, shape, seed):
    return vocabulary.image_to_png_bytes(synthetic.draw_image(colour, shape, (24, 24), seed))


def _table(rows, image_columns):
    features = {k: datasets.Image() if k in image_columns else datasets.Value("string") for k in rows[0]}
    return datasets.Dataset.from_list(rows, features=datasets.Features(features))


PMC = [
    {"image": {"bytes": _png("red", "circle", 1), "path": "a.png"},
     "input": "Question: What is the main finding in the image?\nThe choices are:\n(A) Mass\n(B) Cyst\n(C) None\n(D) Edema",
     "label": "B", "A": "Mass", "B": "Cyst", "C": "None", "D": "Edema"},
    {"image": {"bytes": _png("blue", "square", 2), "path": "b.png"},
     "input": "Question:  Which modality, in the Question: field? \nThe choices are: (A) CT (B) MRI (C) US (D) PET",
     "label": "D", "A": "CT", "B": "MRI", "C": "US", "D": "PET"},
]
CLOSED = {  # folder -> rows; the answer casing differs from the written options on purpose
    "pathvqa": [("Is there necrosis?", "yes", "CLOSED"), ("What stain is used?", "H&E", "OPEN"),
                ("Is the lesion on the left or the right?", "Right", "CLOSED")],
    "SLAKE": [("Where is the liver?", "Left", "OPEN"), ("Is this a CT or an MRI?", "MRI", "CLOSED")],
    "vqa_rad": [("Is the heart enlarged?", "no", "CLOSED"), ("Is this an unanswerable riddle?", "maybe", "CLOSED")],
}
WRITER_REPLIES = {
    "Is there necrosis?": '["Yes", "No"]',
    "Is the lesion on the left or the right?": '```json\n["left", "right"]\n```',
    "Is this a CT or an MRI?": '["CT", "MRI"]',
    "Is the heart enlarged?": '["Yes", "No"]',
    "Is this an unanswerable riddle?": '["Yes", "No"]',  # never holds "maybe": the row fails
}


class LocalWriter:
    """The option writer stand-in: a fixed reply per question; the first call for a question gets a reply that
    is not JSON, so every row needs a retry."""

    def __init__(self):
        self.calls: list[str] = []

    def __call__(self, messages):
        text = messages[-1]["content"]
        question = text.rsplit("Question: ", 1)[1].split("\nAnswer: ")[0]
        first = question not in self.calls
        self.calls.append(question)
        return "Sure! The options are Yes and No." if first else WRITER_REPLIES[question]


def _mmmu_rows(subject, split):
    blank = {f"image_{i}": None for i in range(1, 8)}
    rows = [{"id": f"{split}_{subject}_1", "question": f"<image 1> {subject} {split}: which structure is marked in "
             "<image 2>?", "options": "['Aorta', 'Vena cava', 'Trachea']", "answer": "B",
             "question_type": "multiple-choice", **blank,
             "image_1": {"bytes": _png("green", "triangle", 3), "path": None},
             "image_2": {"bytes": _png("red", "square", 4), "path": None}},
            {"id": f"{split}_{subject}_2", "question": "Name the drug.", "options": "[]", "answer": "aspirin",
             "question_type": "open", **blank}]
    return rows


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    adapt = root / "biomed-VQA-benchmark"
    _table(PMC, {"image"}).save_to_disk(str(adapt / "pmc_vqa"))
    for seed, (folder, rows) in enumerate(CLOSED.items()):
        table = [{"image": {"bytes": _png("blue", "circle", 10 + seed + i), "path": None}, "input": q, "label": a,
                  "answer_type": kind} for i, (q, a, kind) in enumerate(rows)]
        _table(table, {"image"}).save_to_disk(str(adapt / folder))
    mmmu = root / "MMMU"
    for subject in eval_set.MMMU_SUBJECTS:
        for split in eval_set.MMMU_SPLITS:
            ds = _table(_mmmu_rows(subject, split), {f"image_{i}" for i in range(1, 8)})
            (mmmu / subject).mkdir(parents=True, exist_ok=True)
            ds.to_parquet(str(mmmu / subject / f"{split}-00000-of-00001.parquet"))
    medx = root / "MedXpertQA"
    (medx / "MM").mkdir(parents=True)
    (medx / "images").mkdir()
    (medx / "images" / "MM-1-a.jpeg").write_bytes(_png("green", "circle", 5))
    (medx / "images" / "MM-1-b.jpeg").write_bytes(_png("red", "circle", 6))
    options = {"A": "Gout", "B": "Lupus", "C": "Sarcoid", "D": "Lyme", "E": "Psoriasis"}
    medx_rows = [{"id": "MM-1", "question": "A 40-year-old man has a rash (see images). Diagnosis?\nAnswer Choices: "
                  "(A) Gout (B) Lupus (C) Sarcoid (D) Lyme (E) Psoriasis", "options": options, "label": "C",
                  "images": ["MM-1-a.jpeg", "MM-1-b.jpeg"], "question_type": "Reasoning"}]
    (medx / "MM" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in medx_rows))
    return eval_set.Sources(adaptllm=str(adapt), mmmu=str(mmmu), medxpertqa=str(medx))


@pytest.fixture(scope="module")
def built(sources, tmp_path_factory):
    """One build with --on_failure skip: rows, the report and the writer's calls."""
    work = tmp_path_factory.mktemp("build")
    writer = LocalWriter()
    report = eval_set.build_eval_set(sources, work / "eval", complete=writer, options_cache=work / "cache",
                                     on_failure="skip", workers=2, progress=False)
    return load_unified(str(work / "eval")), report, writer, work


def test_the_row_order_is_the_builders_and_differs_from_the_paper_columns():
    # docs/eval_set.md: PMC-VQA, the closed sets, MMMU, MedXpertQA; the paper's table puts MMMU and MedX-M second
    from medvlthinker import benchmarks
    from medvlthinker.inference.workloads import EVAL_SET

    assert eval_set.ORDER == ("pmc_vqa", "pathvqa_closed", "slake_closed", "vqa_rad_closed", "MMMU-medical",
                              "MedXpertQA-MM")
    assert [name for name, _, _ in EVAL_SET] == list(eval_set.ORDER)
    assert [b.label for b in benchmarks.BENCHMARKS][:3] == ["PMC", "MMMU", "MedX-M"]
    assert sorted(eval_set.ORDER) == sorted(b.dataset_name for b in benchmarks.BENCHMARKS)


def test_order_indices_and_per_source_rules(built):
    ds, report, _, _ = built
    names = ds["dataset_name"]
    assert list(dict.fromkeys(names)) == list(eval_set.ORDER)
    assert names.count("pmc_vqa") == 2 and names.count("pathvqa_closed") == 2  # the OPEN questions are left out
    assert names.count("slake_closed") == 1 and names.count("vqa_rad_closed") == 1
    assert names.count("MMMU-medical") == 10 and names.count("MedXpertQA-MM") == 1
    # 2 + 2 + 1 + 2 closed + 10 + 1 indices; the failed VQA-RAD row keeps its index (6) unused
    assert ds["dataset_index"] == [i for i in range(18) if i != 6] and report.next_index == 18
    rows = {row["dataset_index"]: row for row in ds}

    assert rows[0]["question"] == "What is the main finding in the image?"
    assert rows[1]["question"] == "Which modality, in the Question: field?"
    assert json.loads(rows[1]["options"]) == {"A": "CT", "B": "MRI", "C": "US", "D": "PET"}
    assert (rows[1]["answer_label"], rows[1]["answer"]) == ("D", "PET") and rows[1]["hash"] is None

    # written options in the writer's order; the label matched ignoring case, the answer is the option's text
    assert (json.loads(rows[2]["options"]), rows[2]["answer_label"], rows[2]["answer"]) == (
        {"A": "Yes", "B": "No"}, "A", "Yes")
    assert (json.loads(rows[3]["options"]), rows[3]["answer_label"], rows[3]["answer"]) == (
        {"A": "left", "B": "right"}, "B", "right")
    assert rows[3]["question"] == "Is the lesion on the left or the right?"
    assert rows[3]["hash"] == option_writer.row_key("Is the lesion on the left or the right?", "Right")
    assert json.loads(rows[3]["misc"])["source_row"] == 2 and json.loads(rows[3]["misc"])["source_answer"] == "Right"
    assert (rows[5]["answer_label"], rows[5]["answer"]) == ("B", "No")

    mmmu = [rows[i] for i in range(7, 17)]
    assert [json.loads(r["misc"])["config"] for r in mmmu] == [s for s in eval_set.MMMU_SUBJECTS for _ in (0, 1)]
    assert [json.loads(r["misc"])["split"] for r in mmmu] == ["validation", "dev"] * 5
    assert mmmu[0]["question"] == "Basic_Medical_Science validation: which structure is marked in ?"
    assert json.loads(mmmu[0]["options"]) == {"A": "Aorta", "B": "Vena cava", "C": "Trachea"}
    assert (mmmu[0]["answer_label"], mmmu[0]["answer"]) == ("B", "Vena cava") and len(mmmu[0]["images"]) == 2

    medx = rows[17]
    assert medx["question"] == "A 40-year-old man has a rash (see images). Diagnosis?"
    assert list(json.loads(medx["options"])) == list("ABCDE") and medx["answer"] == "Sarcoid"
    assert len(medx["images"]) == 2 and medx["images"][1].size == (24, 24)


def test_failed_rows_are_reported_and_stop_the_default_build(built, sources, tmp_path):
    _, report, writer, work = built
    assert [(f.dataset_name, f.dataset_index, f.source_row, f.reason) for f in report.failures] == [
        ("vqa_rad_closed", 6, 1, "bad_row")]
    assert "'maybe' is not among the options" in report.failures[0].detail
    saved = json.loads((work / "eval.report.json").read_text())
    assert saved["failures"][0]["dataset_index"] == 6
    # every row was retried after the first, unusable reply; the failing one used all 5 tries
    assert writer.calls.count("Is there necrosis?") == 2 and writer.calls.count("Is this an unanswerable riddle?") == 5
    assert report.option_calls == len(writer.calls) == 13 and report.option_cache_hits == 0

    with pytest.raises(UserError, match=r"vqa_rad_closed dataset_index 6 \(source row 1\).*1 row\(s\) failed.*"
                                        r"fix: rerun .*--on_failure skip"):
        eval_set.build_eval_set(sources, tmp_path / "eval", complete=LocalWriter(), options_cache=work / "cache",
                                progress=False)
    assert not (tmp_path / "eval").exists() and (tmp_path / "eval.report.json").exists()


def test_a_rerun_reads_the_cache_and_asks_only_for_the_failed_row(built, sources, tmp_path):
    _, _, _, work = built
    writer = LocalWriter()
    report = eval_set.build_eval_set(sources, tmp_path / "again.parquet", complete=writer, on_failure="skip",
                                     options_cache=work / "cache", progress=False)
    assert report.option_cache_hits == 4 and set(writer.calls) == {"Is this an unanswerable riddle?"}
    first = load_unified(str(work / "eval"))
    again = datasets.Dataset.from_parquet(str(tmp_path / "again.parquet"))
    assert again["options"] == first["options"] and again["dataset_index"] == first["dataset_index"]
    # the cache entries are the original's layout: question, answer, options
    entry = json.loads((work / "cache" / f"{option_writer.row_key('Is there necrosis?', 'yes')}.json").read_text())
    assert (entry["question"], entry["answer"], entry["options"]) == ("Is there necrosis?", "yes", ["Yes", "No"])


def test_parse_reply_rules():
    assert option_writer.parse_reply('```\n["T1", "T2"]\n```', "t2") == ["T1", "T2"]
    for reply, message in [('["Yes"]', "1 option"), ('["Yes", "No"]', "not among"), ("Yes, No", "not JSON"),
                           ('{"A": "Yes"}', "not a JSON list"), ('["Yes", 2]', "not a JSON list")]:
        with pytest.raises(ValueError, match=message):
            option_writer.parse_reply(reply, "Maybe" if "not among" in message else "Yes")


def test_script_rebuilds_from_the_cache_without_a_key(built, sources, tmp_path, monkeypatch):
    _, _, _, work = built
    spec = importlib.util.spec_from_file_location("build_eval_set", ROOT / "data_process" / "build_eval_set.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    common = ["--adaptllm", sources.adaptllm, "--mmmu", sources.mmmu, "--medxpertqa", sources.medxpertqa]
    # the unanswerable row is not cached, so a call is needed: the missing key is named before any row is sent
    result = CliRunner().invoke(script.main, [*common, "--options_cache", str(work / "cache"),
                                              "--output", str(tmp_path / "x")])
    assert result.exit_code == 1 and "environment variable OPENAI_API_KEY is not set; fix: export" in result.output
    cache = tmp_path / "cache"
    cache.mkdir()
    for path in (work / "cache").glob("*.json"):
        (cache / path.name).write_text(path.read_text())
    riddle = option_writer.row_key("Is this an unanswerable riddle?", "maybe")
    option_writer.OptionCache(cache).put(riddle, "Is this an unanswerable riddle?", "maybe", ["Yes", "No", "Maybe"])
    result = CliRunner().invoke(script.main, [*common, "--options_cache", str(cache), "--output", str(tmp_path / "y")])
    assert result.exit_code == 0, result.output
    rebuilt = load_unified(str(tmp_path / "y"))
    assert rebuilt["dataset_index"] == list(range(18))
    assert json.loads(rebuilt[6]["options"]) == {"A": "Yes", "B": "No", "C": "Maybe"} and rebuilt[6]["answer_label"] == "C"


def test_medxpertqa_must_be_a_local_copy(sources, tmp_path):
    remote = eval_set.Sources(adaptllm=sources.adaptllm, mmmu=sources.mmmu, medxpertqa=eval_set.MEDXPERTQA)
    with pytest.raises(UserError, match=r"--medxpertqa TsinghuaC3I/MedXpertQA: is not a local folder.*fix: download"):
        eval_set.build_rows(remote, writer := LocalWriter(), tmp_path / "cache", progress=False)
    assert writer.calls == []  # checked before any row is read or sent
