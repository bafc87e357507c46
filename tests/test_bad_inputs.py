"""Bad inputs, stale state and interrupted runs, stage by stage: nothing accepted silently, nothing lost.

Each case runs the stage script as a user would (through click), after a good run wrote its output. It asserts the
exit code (1, or 0 where the input is legitimate and must now work), that the one-line message names the row, file
or key, that no traceback is printed, and that the earlier output is byte-identical afterwards.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
from pathlib import Path

import datasets
import pytest
from click.testing import CliRunner
from PIL import Image

from medvlthinker.analysis.runs import load_records, load_runs
from medvlthinker.data import to_dataset
from medvlthinker.demo import synthetic

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "configs" / "sft" / "tiny_cpu.yaml"


def _script(relpath: str):
    spec = importlib.util.spec_from_file_location(Path(relpath).stem, ROOT / relpath)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(relpath: str, *args) -> tuple[int, str]:
    module = _script(relpath)
    result = CliRunner().invoke(getattr(module, "main", None) or module.cli, [str(a) for a in args])
    return result.exit_code, result.output


def digest(path: Path) -> dict[str, str]:
    """Every file under ``path`` (or the file itself) by relative name and content hash."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path.parent)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def error_line(output: str) -> str:
    """The one error line of a failed run; a traceback fails the test."""
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, output
    assert "fix:" in lines[0], lines[0]
    return lines[0]


def expect_failure(relpath: str, *args, names: list[str], kept: list[Path] = ()) -> str:
    """Run; assert exit code 1, one error line naming each of ``names``, and ``kept`` outputs unchanged."""
    before = {str(p): digest(p) for p in kept}
    code, output = run(relpath, *args)
    assert code == 1, output
    line = error_line(output)
    for name in names:
        assert name in line, (name, line)
    for p in kept:
        assert digest(p) == before[str(p)], f"{p} changed"
    return line


# ------------------------------------------------------------------------------------------------- shared data
def _corrupt(ds, position: int):
    raw = ds.cast_column("images", datasets.Sequence(datasets.Image(decode=False)))

    def change(row, i):
        if i == position:
            row["images"] = [{"bytes": b"\x89PNG\r\n\x1a\n truncated", "path": None}]
        return row

    return raw.map(change, with_indices=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A good image set, the same set with a corrupt image at dataset_index 5, and the good outputs of both
    converters (the earlier results a bad run must not touch)."""
    root = tmp_path_factory.mktemp("bad_inputs")
    rows = synthetic.make_image_rows(n=8, seed=2)
    good = root / "good"
    to_dataset(rows).save_to_disk(str(good))
    bad = root / "bad_image"
    _corrupt(to_dataset(rows), 5).save_to_disk(str(bad))
    verl_out, sft_out = root / "verl.parquet", root / "sft"
    assert run("data_process/convert_verl_format.py", good, verl_out)[0] == 0
    assert run("data_process/convert_sft_format.py", good, sft_out)[0] == 0
    return {"root": root, "rows": rows, "good": good, "bad_image": bad, "verl": verl_out, "sft": sft_out}


# ---------------------------------------------------------------- class 4: corrupt images never reach training
def test_verl_converter_names_the_row_of_a_corrupt_image_and_keeps_the_old_file(data):
    expect_failure("data_process/convert_verl_format.py", data["bad_image"], data["verl"], "--overwrite",
                   "--num_proc", "2", names=["dataset_index=5", "cannot be decoded"], kept=[data["verl"]])


def test_sft_converter_names_the_row_of_a_corrupt_image_and_keeps_the_old_set(data):
    expect_failure("data_process/convert_sft_format.py", data["bad_image"], data["sft"], "--overwrite",
                   names=["dataset_index=5", "cannot be decoded"], kept=[data["sft"]])


def test_verl_converter_rejects_a_question_holding_the_image_placeholder(data, tmp_path):
    rows = [dict(r) for r in data["rows"][:3]]
    rows[1]["question"] = "Compare <image> with the figure."
    src = tmp_path / "placeholder"
    to_dataset(rows).save_to_disk(str(src))
    expect_failure("data_process/convert_verl_format.py", src, data["verl"], "--overwrite",
                   names=[f"dataset_index={rows[1]['dataset_index']}", "<image>"], kept=[data["verl"]])


def test_sft_run_names_a_corrupt_image_before_the_model_loads(data, tmp_path):
    # An SFT set written before the converters decoded images: the run must stop before training, naming the row.
    from medvlthinker.converters.sft_format import convert_to_sft

    sft = convert_to_sft(to_dataset(data["rows"]))
    sft_bad = tmp_path / "sft_bad"
    _corrupt(sft, 3).save_to_disk(str(sft_bad))
    expect_failure("train/sft/train_sft.py", TINY_CONFIG, f"model_name_or_path={_unloadable_model(tmp_path)}",
                   f"train_data={sft_bad}", f"output_dir={tmp_path / 'run'}",
                   names=[f"dataset_index={data['rows'][3]['dataset_index']}", "cannot be decoded", str(sft_bad)])


# ------------------------------------------------------------------------------- class 5: read-only inputs
def test_converters_and_loading_leave_the_input_folder_untouched(data, tmp_path):
    # datasets writes cache-*.arrow beside the Arrow files a set was loaded from; a shared or read-only set must
    # not be written to (as root a chmod cannot show it, so the folder's files are compared instead).
    from medvlthinker.data import load_unified

    before = digest(data["good"])
    code, output = run("data_process/convert_verl_format.py", data["good"], tmp_path / "v.parquet",
                       "--subset", "pmc_vqa", "--num_proc", "2")
    assert code == 0, output
    assert run("data_process/convert_sft_format.py", data["good"], tmp_path / "s", "--subset", "pmc_vqa")[0] == 0
    ds = load_unified(str(data["good"]), subset=["pmc_vqa"], check_images=True)
    ds.map(lambda row: {"n": len(row["question"])})
    assert digest(data["good"]) == before
    assert not list(data["good"].glob("cache-*.arrow"))


# ------------------------------------------------------------------- class 6: PMC-VQA preparation state
@pytest.fixture()
def pmc(tmp_path):
    figures = tmp_path / "figures"
    figures.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (64, 48), (20, 40, 60)).save(figures / name)
    header = ["Figure_path", "Question", "Answer", "Choice A", "Choice B", "Choice C", "Choice D", "Answer_label"]
    records = [[name, f"Which modality, {name}?", "MRI", "A:CT", "B:MRI", "C:PET", "D:US", "B"]
               for name in ("a.png", "b.png", "c.png")]

    def write(path, rows, columns=header):
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            writer.writerows([[r[header.index(c)] for c in columns] for r in rows])
        return path

    csv_path = write(tmp_path / "train.csv", records)
    out = tmp_path / "pmc.parquet"
    code, output = run("data_process/prepare_pmc_vqa.py", "--csv_path", csv_path, "--image_dir", figures,
                       "--output", out, "--chunk_size", "2")
    assert code == 0 and "image_missing: 1" in output, output
    return {"tmp": tmp_path, "figures": figures, "csv": csv_path, "out": out, "records": records, "write": write,
            "header": header}


def test_prepare_rebuilds_a_chunk_after_its_missing_figure_is_added(pmc):
    Image.new("RGB", (64, 48), (20, 40, 60)).save(pmc["figures"] / "c.png")
    code, output = run("data_process/prepare_pmc_vqa.py", "--csv_path", pmc["csv"], "--image_dir", pmc["figures"],
                       "--output", pmc["out"], "--chunk_size", "2")
    assert code == 0, output
    assert "read 3 rows, wrote 3, skipped 0" in output
    assert len(datasets.Dataset.from_parquet(str(pmc["out"]))) == 3


def test_prepare_with_a_wrong_image_dir_reports_the_missing_figures_and_writes_nothing(pmc):
    wrong = pmc["tmp"] / "elsewhere"
    wrong.mkdir()
    expect_failure("data_process/prepare_pmc_vqa.py", "--csv_path", pmc["csv"], "--image_dir", wrong,
                   "--output", pmc["out"], "--chunk_size", "2",
                   names=["train.csv", "image_missing: 3", "--image_dir"], kept=[pmc["out"]])


def test_prepare_with_an_empty_csv_names_the_file(pmc):
    empty = pmc["write"](pmc["tmp"] / "empty.csv", [])
    expect_failure("data_process/prepare_pmc_vqa.py", "--csv_path", empty, "--image_dir", pmc["figures"],
                   "--output", pmc["out"], names=["empty.csv", "no data rows"], kept=[pmc["out"]])


def test_prepare_without_the_answer_column_names_it(pmc):
    columns = [c for c in pmc["header"] if c != "Answer"]
    no_answer = pmc["write"](pmc["tmp"] / "no_answer.csv", pmc["records"], columns)
    expect_failure("data_process/prepare_pmc_vqa.py", "--csv_path", no_answer, "--image_dir", pmc["figures"],
                   "--output", pmc["out"], names=["no_answer.csv", "'Answer'"], kept=[pmc["out"]])


def test_prepare_interrupted_while_joining_keeps_the_previous_output_whole(pmc):
    # A join that stops half-way (here: the second chunk is unreadable, as after a crash of the disk or the
    # process) must leave the previous output, not a file holding the first chunk only.
    chunks = sorted(pmc["out"].with_name(pmc["out"].name + ".chunks").glob("rows-*.parquet"))
    assert len(chunks) == 2
    chunks[1].write_bytes(chunks[1].read_bytes()[:40])
    expect_failure("data_process/prepare_pmc_vqa.py", "--csv_path", pmc["csv"], "--image_dir", pmc["figures"],
                   "--output", pmc["out"], "--chunk_size", "2", names=[chunks[1].name, "delete it"],
                   kept=[pmc["out"]])


# ------------------------------------------------------------------ class 7: pass-rate records for curation
@pytest.fixture()
def curated(tmp_path):
    rows = synthetic.make_text_rows(n=8, seed=4)
    train = tmp_path / "train"
    to_dataset(rows).save_to_disk(str(train))
    records = tmp_path / "eval_results.jsonl"
    with records.open("w") as f:
        for i, r in enumerate(rows):
            f.write(json.dumps({"dataset_name": r["dataset_name"], "dataset_index": r["dataset_index"],
                                "num_correct": 1 + i % 7, "num_rollouts": 16}) + "\n")
    out = tmp_path / "curated"
    code, output = run("data_process/order_easy_to_hard.py", "--dataset_name", train, "--results_jsonl_path",
                       records, "--save_to_disk_path", out)
    assert code == 0, output
    return {"tmp": tmp_path, "rows": rows, "train": train, "records": records, "out": out}


def _curate(c, train, records):
    return ("data_process/order_easy_to_hard.py", "--dataset_name", train, "--results_jsonl_path", records,
            "--save_to_disk_path", c["out"])


def test_curation_refuses_an_empty_records_file(curated):
    empty = curated["tmp"] / "empty.jsonl"
    empty.write_text("")
    expect_failure(*_curate(curated, curated["train"], empty), names=["empty.jsonl", "holds no records"],
                   kept=[curated["out"]])


def test_curation_refuses_duplicate_dataset_index_rows(curated):
    rows = [dict(r) for r in curated["rows"]]
    rows[6]["dataset_index"] = rows[2]["dataset_index"]
    dup = curated["tmp"] / "dup_rows"
    to_dataset(rows).save_to_disk(str(dup))
    expect_failure(*_curate(curated, dup, curated["records"]),
                   names=[f"dataset_index={rows[2]['dataset_index']}", "duplicate"], kept=[curated["out"]])


def test_curation_refuses_a_duplicated_record(curated):
    lines = curated["records"].read_text().splitlines()
    doubled = curated["tmp"] / "doubled.jsonl"
    doubled.write_text("\n".join(lines + lines[:1]) + "\n")
    expect_failure(*_curate(curated, curated["train"], doubled), names=["doubled.jsonl:9", "dataset_index 0 is already recorded"],
                   kept=[curated["out"]])


def test_curation_refuses_records_of_another_data_set(curated):
    other = curated["tmp"] / "other.jsonl"
    rows = synthetic.make_text_rows(n=4, seed=9, start_index=1000)
    other.write_text("".join(json.dumps({"dataset_name": r["dataset_name"], "dataset_index": r["dataset_index"],
                                         "num_correct": 3, "num_rollouts": 16}) + "\n" for r in rows))
    expect_failure(*_curate(curated, curated["train"], other), names=["no pass-rate record matches"],
                   kept=[curated["out"]])


def test_curation_refuses_a_band_smaller_than_min_rows(curated):
    # the fixture's 8 rows have pass counts 1..7, 1: the band [1, 3] keeps 4 of them, fewer than a batch of 6
    expect_failure(*_curate(curated, curated["train"], curated["records"]), "--remove_pass_count_above", "3",
                   "--min_rows", "6", names=["would have 4 rows, fewer than the 6 --min_rows asks for", "--min_rows"],
                   kept=[curated["out"]])
    code, output = run(*_curate(curated, curated["train"], curated["records"]), "--remove_pass_count_above", "3",
                       "--min_rows", "4")
    assert code == 0, output
    assert "saved 4 rows" in output


# ------------------------------------------------------------------------- class 9: SFT fails before the model
def _unloadable_model(tmp_path: Path) -> Path:
    """A model directory transformers cannot load: any check that runs after the model load never runs."""
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")
    return model


@pytest.mark.parametrize("case", ["missing", "not_sft", "empty", "output_is_file"])
def test_sft_checks_data_and_output_dir_before_loading_the_model(data, tmp_path, case):
    from medvlthinker.converters.sft_format import convert_to_sft

    train, out = data["sft"], tmp_path / "run"
    if case == "missing":
        train, names = tmp_path / "nothing_here", ["train_data", "does not exist"]
    elif case == "not_sft":
        train, names = data["good"], ["train_data", "lacks the column(s)", "convert_sft_format.py"]
    elif case == "empty":
        train = tmp_path / "empty_sft"
        convert_to_sft(to_dataset(data["rows"])).select([]).save_to_disk(str(train))
        names = [str(train), "has no rows"]
    else:
        out.write_text("not a directory")
        names = ["output_dir", "is a file"]
    expect_failure("train/sft/train_sft.py", TINY_CONFIG, f"model_name_or_path={_unloadable_model(tmp_path)}",
                   f"train_data={train}", f"output_dir={out}", names=names, kept=[data["sft"]])


# -------------------------------------------------------------------------------- class 10: the report
def test_report_marks_whitespace_outputs_and_bounds_elongated_thumbnails(tmp_path):
    import base64
    import io

    from test_tables import make_records, write_run

    from medvlthinker.analysis import report, tables

    rows = synthetic.make_eval_rows(rows_per_benchmark=2, seed=5, image_size=(48, 48))
    records = make_records(rows, seed=0)
    for record in records:
        record["rollouts"][0]["output_text"] = " \n\n "
    write_run(tmp_path / "runs" / "m" / "r0", records)
    runs = load_runs([("m", str(tmp_path / "runs" / "m" / "r0"))])
    samples = report.collect_samples(runs, per_benchmark=1)
    assert samples and all(s["output_note"] == "(output is only whitespace: 4 characters, 2 line breaks)"
                           for s in samples)
    assert all(s["output"].strip() for s in samples)  # the whitespace is drawn, not an empty box
    out = report.make_report(report.ReportSettings(tmp_path / "out", tables.TableSettings(
        runs_root=tmp_path / "runs", n_resamples=20), samples_per_benchmark=1))
    assert "output is only whitespace" in Path(out["report"]).read_text(encoding="utf-8")

    uri = report.thumbnail_uri(Image.new("RGB", (27, 1100), (200, 30, 30)))
    w, h = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).size
    assert max(w, h) <= 160 and max(w, h) <= report.MAX_THUMBNAIL_ASPECT * min(w, h)


# --------------------------------------------------------------------------------- the entry point itself
def test_usage_errors_are_one_line_and_debug_shows_the_traceback(data, tmp_path):
    code, output = run("data_process/convert_verl_format.py", data["good"])
    assert code == 1 and "OUT_PARQUET" in error_line(output)
    code, output = run("data_process/convert_verl_format.py", data["good"], tmp_path / "x.json")
    assert code == 1 and "x.json" in error_line(output) and ".parquet" in output
    result = CliRunner().invoke(_script("data_process/convert_verl_format.py").main,
                                [str(data["good"]), str(tmp_path / "x.json"), "--debug"])
    assert result.exit_code == 1 and isinstance(result.exception, ValueError)


# --------------------------------------------- classes 1, 2: a rerun never mixes runs, --overwrite never loses work
@pytest.fixture(scope="module")
def eval_run(data, tiny_model_dir, tmp_path_factory):
    """A finished greedy eval of the good set (hf backend, tiny model): the earlier results a rerun must keep."""
    out = tmp_path_factory.mktemp("eval_run") / "run"
    base = ["--backend", "hf", "--dataset_name", data["good"], "--temperature", "0", "--n", "1", "--max_tokens", "2",
            "--seed", "42"]
    code, output = run("eval/run_offline_inference.py", "--model", tiny_model_dir, *base, "--output_dir", out)
    assert code == 0, output
    return {"out": out, "base": base}


def _other_model(tmp_path_factory) -> Path:
    from medvlthinker.demo.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("other_model") / "model", seed=1)


def test_resume_with_another_model_is_refused_and_keeps_args(eval_run, tmp_path_factory):
    other = _other_model(tmp_path_factory)
    expect_failure("eval/run_offline_inference.py", "--model", other, *eval_run["base"], "--output_dir",
                   eval_run["out"], names=["holds records of another run", "model:", "--overwrite"],
                   kept=[eval_run["out"]])


@pytest.mark.parametrize("change, name", [(["--temperature", "1.0"], "temperature:"), (["--max_tokens", "3"],
                                                                                        "max_tokens:"),
                                          (["--subset", "pmc_vqa", "--dataset_size", "4"], "num_rows:")])
def test_resume_with_other_settings_is_refused(eval_run, tiny_model_dir, change, name):
    base = list(eval_run["base"])
    for flag, value in zip(change[::2], change[1::2]):
        if flag in base:
            base[base.index(flag) + 1] = value
        else:
            base += [flag, value]
    expect_failure("eval/run_offline_inference.py", "--model", tiny_model_dir, *base, "--output_dir", eval_run["out"],
                   names=["holds records of another run", name], kept=[eval_run["out"]])


def test_resume_with_the_same_settings_and_another_window_is_accepted(eval_run, tiny_model_dir):
    before = digest(eval_run["out"] / "eval_results.jsonl")
    code, output = run("eval/run_offline_inference.py", "--model", tiny_model_dir, *eval_run["base"], "--window", "3",
                       "--output_dir", eval_run["out"])
    assert code == 0, output
    assert digest(eval_run["out"] / "eval_results.jsonl") == before


def test_overwrite_with_a_corrupt_image_keeps_the_previous_results(eval_run, tiny_model_dir, data):
    base = list(eval_run["base"])
    base[base.index("--dataset_name") + 1] = str(data["bad_image"])
    expect_failure("eval/run_offline_inference.py", "--model", tiny_model_dir, *base, "--overwrite", "--output_dir",
                   eval_run["out"], names=["dataset_index=5"], kept=[eval_run["out"]])


def test_overwrite_with_a_model_that_cannot_load_keeps_the_previous_results(eval_run, tmp_path):
    broken = tmp_path / "broken_model"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    before = digest(eval_run["out"])
    code, output = run("eval/run_offline_inference.py", "--model", broken, *eval_run["base"], "--overwrite",
                       "--output_dir", eval_run["out"])
    assert code == 1, output
    assert digest(eval_run["out"]) == before, "the failed --overwrite run must restore the previous results"
    assert not list(eval_run["out"].glob(".replaced-*"))


# ------------------------------------------------------ class 8: one records reader, one answer for one run
def _copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_a_duplicated_record_is_refused_by_regrade_and_tables_alike(eval_run, tmp_path):
    run_dir = _copy_run(eval_run["out"], tmp_path / "dup")
    merged = run_dir / "eval_results.jsonl"
    lines = merged.read_text().splitlines()
    merged.write_text("\n".join(lines + lines[:1]) + "\n")
    index = json.loads(lines[0])["dataset_index"]
    regrade_line = expect_failure("eval/regrade.py", run_dir, "--output_dir", tmp_path / "regraded",
                                  names=[f"eval_results.jsonl:{len(lines) + 1}",
                                         f"dataset_index {index} is already recorded"], kept=[run_dir])
    tables_line = expect_failure("analysis/make_tables.py", "--run", f"m={run_dir}", "--output_dir",
                                 tmp_path / "tables", names=[f"dataset_index {index} is already recorded"],
                                 kept=[run_dir])
    assert regrade_line.split(": ", 1)[1] == tables_line.split(": ", 1)[1]


def test_a_torn_shard_line_is_skipped_alike_and_a_torn_merged_file_refused(eval_run, tmp_path):
    from medvlthinker.inference.records import read_run

    run_dir = _copy_run(eval_run["out"], tmp_path / "torn")
    merged = run_dir / "eval_results.jsonl"
    shard = next(run_dir.glob("shard-*.jsonl"))
    with shard.open("a") as fh:
        fh.write('{"dataset_name": "pmc_vqa", "dataset_in')
    merged.rename(tmp_path / "merged.jsonl")
    assert [r["dataset_index"] for r in read_run(run_dir)] == \
        [r["dataset_index"] for r in load_records(run_dir)] == sorted(r["dataset_index"] for r in data_rows(eval_run))
    torn = tmp_path / "merged.jsonl"
    with torn.open("a") as fh:
        fh.write('{"dataset_name": "pmc_vqa", "dataset_in')
    expect_failure("eval/regrade.py", torn, "--output_dir", tmp_path / "r2", names=["merged.jsonl:", "torn last line"])


def test_regrade_of_shards_names_the_rows_a_torn_line_left_out(eval_run, tmp_path):
    # a run killed while appending its last row: the shard rule skips the torn line, so the shards hold one row
    # fewer than the run; regrade used to grade the others without a word
    run_dir = _copy_run(eval_run["out"], tmp_path / "killed")
    (run_dir / "eval_results.jsonl").unlink()
    (run_dir / "accuracy.json").unlink()
    shard = next(run_dir.glob("shard-*.jsonl"))
    lines = shard.read_text().splitlines()
    shard.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:30])
    expect_failure("eval/regrade.py", run_dir, "--output_dir", tmp_path / "r",
                   names=[f"holds {len(lines) - 1} of the run's {len(lines)} rows",
                          f"shard 0 of 1: {len(lines) - 1} of {len(lines)}", "--allow_partial"], kept=[run_dir])
    with pytest.warns(UserWarning, match=f"holds {len(lines) - 1} of the run's {len(lines)} rows"):
        code, output = run("eval/regrade.py", run_dir, "--output_dir", tmp_path / "r", "--allow_partial")
    assert code == 0, output
    assert len((tmp_path / "r" / "eval_results.regrade.jsonl").read_text().splitlines()) == len(lines) - 1


def data_rows(eval_run):
    return [json.loads(line) for line in (eval_run["out"] / "eval_results.jsonl").read_text().splitlines()]


# ------------------------------------------------- image paths outside the data set's folder are never read
@pytest.fixture()
def outside(data, tmp_path):
    """A jsonl data set whose row 1 points at a file outside its folder (``../secret/x.png``), row 2 at an absolute
    path, and a parquet file whose ``path`` field leads out; the secret file's bytes must reach no output."""
    from medvlthinker.data.loading import unified_features

    secret = tmp_path / "secret"
    secret.mkdir()
    Image.new("RGB", (40, 40), (1, 2, 3)).save(secret / "x.png")
    folder = tmp_path / "data"
    folder.mkdir()
    Image.new("RGB", (40, 40), (9, 9, 9)).save(folder / "ok.png")
    rows = [dict(r, images=["ok.png"]) for r in data["rows"][:3]]
    rows[1]["images"] = ["../secret/x.png"]
    jsonl = folder / "rows.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    absolute = folder / "absolute.jsonl"
    absolute.write_text("".join(json.dumps(dict(r, images=[str(secret / "x.png")] if i == 2 else ["ok.png"])) + "\n"
                                for i, r in enumerate(rows)))
    parquet = folder / "rows.parquet"
    with_paths = [dict(r, images=[{"path": str(folder / r["images"][0]), "bytes": None}]) for r in rows]
    datasets.Dataset.from_list(with_paths, features=unified_features()).to_parquet(str(parquet))  # paths, no bytes
    return {"jsonl": jsonl, "absolute": absolute, "parquet": parquet, "rows": rows, "secret": secret / "x.png"}


@pytest.mark.parametrize("script", ["data_process/convert_verl_format.py", "data_process/convert_sft_format.py"])
@pytest.mark.parametrize("source", ["jsonl", "absolute", "parquet"])
def test_converters_refuse_an_image_path_outside_the_data_folder(outside, tmp_path, script, source):
    index = outside["rows"][1 if source != "absolute" else 2]["dataset_index"]
    out = tmp_path / ("out.parquet" if "verl" in script else "out")
    expect_failure(script, outside[source], out, names=[f"dataset_index={index}", "outside the data set's folder",
                                                       "--allow_outside_images"])
    assert not out.exists()


def test_the_outside_images_flag_lets_a_trusted_set_through(outside, tmp_path):
    code, output = run("data_process/convert_verl_format.py", outside["jsonl"], tmp_path / "v.parquet",
                       "--allow_outside_images")
    assert code == 0, output


def test_eval_refuses_an_image_path_outside_the_data_folder_before_the_model_loads(outside, tmp_path):
    expect_failure("eval/run_offline_inference.py", "--model", _unloadable_model(tmp_path), "--backend", "hf",
                   "--dataset_name", outside["jsonl"], "--output_dir", tmp_path / "run",
                   names=[f"dataset_index={outside['rows'][1]['dataset_index']}", "outside the data set's folder"])


def _pmc_record(figure_path: str) -> dict:
    """One raw PMC-VQA csv row whose figure is ``figure_path``."""
    return {"Figure_path": figure_path, "Question": "Q?", "Answer": "x", "Choice A": "A:x", "Choice B": "B:y",
            "Choice C": "C:z", "Choice D": "D:w", "Answer_label": "A"}


def test_pmc_preparation_and_the_eval_set_builder_refuse_paths_out_of_their_folder(tmp_path):
    from medvlthinker.images import OutsideImageError
    from medvlthinker.prepare import eval_set
    from medvlthinker.prepare.pmc_vqa import pmc_vqa_row
    from medvlthinker.prepare.report import MalformedRow

    figures = tmp_path / "figures"
    figures.mkdir()
    Image.new("RGB", (40, 40)).save(tmp_path / "secret.png")
    record = _pmc_record("../secret.png")
    with pytest.raises(MalformedRow, match="image_outside.*outside the data set's folder"):
        pmc_vqa_row(record, 0, figures, compat="lenient")
    with pytest.raises(OutsideImageError, match="outside the data set's folder"):
        eval_set._image_value("../secret.png", figures)
    assert eval_set._image_value("../secret.png", figures, allow_outside=True)["bytes"]


# ------------------------------------------- a resume is the same run: what the paths hold, the same samples
def test_resume_with_new_weights_or_new_rows_at_the_same_paths_is_refused(data, tiny_model_dir, tmp_path,
                                                                         tmp_path_factory):
    import shutil

    model, rows, out = tmp_path / "model", tmp_path / "rows", tmp_path / "run"
    shutil.copytree(tiny_model_dir, model)
    shutil.copytree(data["good"], rows)
    args = ["--model", model, "--backend", "hf", "--dataset_name", rows, "--max_tokens", "2", "--output_dir", out]
    code, output = run("eval/run_offline_inference.py", *args)
    assert code == 0, output

    other = _other_model(tmp_path_factory)  # same config.json, other weights
    assert (other / "config.json").read_bytes() == (model / "config.json").read_bytes()
    shutil.copy(other / "model.safetensors", model / "model.safetensors")
    expect_failure("eval/run_offline_inference.py", *args, names=["holds records of another run", "model_sha256"],
                   kept=[out])
    shutil.copy(tiny_model_dir / "model.safetensors", model / "model.safetensors")

    shutil.rmtree(rows)  # as many rows, other content
    to_dataset(synthetic.make_image_rows(n=8, seed=9)).save_to_disk(str(rows))
    expect_failure("eval/run_offline_inference.py", *args, names=["holds records of another run", "data_sha256"],
                   kept=[out])


def test_a_killed_and_resumed_pass_rate_run_samples_as_an_uninterrupted_one(data, tiny_model_dir, tmp_path):
    # The state a kill leaves: args.json and the first records of the shard. Sampling was seeded per engine, so
    # the rows generated after the resume drew other samples than in one uninterrupted run.
    args = ["--model", tiny_model_dir, "--backend", "hf", "--dataset_name", data["good"], "--temperature", "1.0",
            "--n", "2", "--max_tokens", "4", "--batch_size", "4"]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    code, output = run("eval/run_offline_inference.py", *args, "--output_dir", whole)
    assert code == 0, output
    resumed.mkdir()
    (resumed / "args.json").write_bytes((whole / "args.json").read_bytes())
    shard = (whole / "shard-000-of-001.jsonl").read_text().splitlines(keepends=True)
    (resumed / "shard-000-of-001.jsonl").write_text("".join(shard[:3]))
    code, output = run("eval/run_offline_inference.py", *args, "--output_dir", resumed)
    assert code == 0, output
    from medvlthinker.inference.records import read_records

    assert read_records(resumed / "eval_results.jsonl") == read_records(whole / "eval_results.jsonl")


# ------------------------------------------------------------- images Qwen2.5-VL cannot take, named by row
@pytest.fixture()
def untakeable(data, tmp_path):
    """A set whose row 2 holds a 10x2600 figure (side ratio 260), and one whose row 5 holds a decompression bomb (a
    10,000 x 10,000 one-bit PNG of a few kB)."""
    import io

    def png(img):
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        return buf.getvalue()

    thin, bomb = [dict(r) for r in data["rows"]], [dict(r) for r in data["rows"]]
    thin[2]["images"] = [{"bytes": png(Image.new("RGB", (10, 2600), (200, 0, 0))), "path": None}]
    bomb[5]["images"] = [{"bytes": png(Image.new("1", (10_000, 10_000))), "path": None}]
    to_dataset(thin).save_to_disk(str(tmp_path / "thin"))
    to_dataset(bomb).save_to_disk(str(tmp_path / "bomb"))
    return {"path": tmp_path / "thin", "bomb_path": tmp_path / "bomb", "thin": thin[2]["dataset_index"],
            "bomb": bomb[5]["dataset_index"]}


@pytest.mark.parametrize("script", ["data_process/convert_verl_format.py", "data_process/convert_sft_format.py"])
def test_converters_name_the_row_of_an_image_the_model_cannot_take(untakeable, tmp_path, script):
    out = tmp_path / ("out.parquet" if "verl" in script else "out")
    expect_failure(script, untakeable["path"], out,
                   names=[f"dataset_index={untakeable['thin']}", "side ratio of 260", "at most 200"])
    expect_failure(script, untakeable["bomb_path"], out,
                   names=[f"dataset_index={untakeable['bomb']}", "decompression bomb"])


def test_eval_names_an_image_the_model_cannot_take_before_the_model_loads(untakeable, tmp_path):
    expect_failure("eval/run_offline_inference.py", "--model", _unloadable_model(tmp_path), "--backend", "hf",
                   "--dataset_name", untakeable["path"], "--output_dir", tmp_path / "run",
                   names=[f"dataset_index={untakeable['thin']}", "side ratio of 260"])


def test_pmc_preparation_reports_a_figure_the_model_cannot_take(tmp_path):
    from medvlthinker.prepare.pmc_vqa import pmc_vqa_row
    from medvlthinker.prepare.report import MalformedRow

    figures = tmp_path / "figures"
    figures.mkdir()
    Image.new("RGB", (10, 2600)).save(figures / "thin.png")
    record = _pmc_record("thin.png")
    with pytest.raises(MalformedRow, match="image_undecodable: thin.png: .*side ratio of 260"):
        pmc_vqa_row(record, 0, figures, compat="lenient")


def test_a_second_run_into_the_same_folder_is_refused_while_the_first_runs(data, tiny_model_dir, tmp_path):
    # Two runs writing into one folder both generated every row, and the folder then failed every rerun on the
    # duplicate lines. The second run must stop at once and leave the first run's work whole.
    import subprocess
    import sys
    import time

    from medvlthinker.inference.records import read_records

    out = tmp_path / "run"
    args = ["--model", str(tiny_model_dir), "--backend", "hf", "--dataset_name", str(data["good"]), "--max_tokens",
            "48", "--batch_size", "1", "--output_dir", str(out)]
    first = subprocess.Popen([sys.executable, str(ROOT / "eval" / "run_offline_inference.py"), *args],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not (out / "args.json").exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert first.poll() is None, "the first run must still be running"
        expect_failure("eval/run_offline_inference.py", *args, names=[str(out), "another run", "--output_dir"])
    finally:
        _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-3000:]
    assert sorted(r["dataset_index"] for r in read_records(out / "eval_results.jsonl")) == sorted(
        r["dataset_index"] for r in data["rows"])


@pytest.mark.parametrize("script", ["eval/regrade.py", "analysis/make_tables.py"])
def test_regrade_and_tables_refuse_a_run_without_records(tmp_path, script):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "eval_results.jsonl").write_text("")
    args = [run_dir] if script == "eval/regrade.py" else ["--run", f"m={run_dir}", "--output_dir", tmp_path / "t"]
    expect_failure(script, *args, names=[str(run_dir), "holds no records"])
    assert not (tmp_path / "t").exists() and sorted(p.name for p in run_dir.iterdir()) == ["eval_results.jsonl"]


def test_verl_merge_refuses_an_existing_target_before_any_work(tmp_path):
    actor = tmp_path / "global_step_1" / "actor"
    (actor / "huggingface").mkdir(parents=True)
    (actor / "fsdp_config.json").write_text('{"FSDP_version": 2, "world_size": 1}')
    (actor / "model_world_size_1_rank_0.pt").write_bytes(b"")
    (actor / "huggingface" / "config.json").write_text("{}")
    target = tmp_path / "merged"
    target.mkdir()
    (target / "model.safetensors").write_bytes(b"an earlier merge")
    expect_failure("medvlthinker/train/merge.py", "verl", actor, target,
                   names=[str(target), "already exists", "--overwrite"], kept=[target])
    # with --overwrite a merge that fails (here: empty shards) leaves the earlier model as it was
    code, output = run("medvlthinker/train/merge.py", "verl", actor, target, "--overwrite")
    assert code == 1 and "verl's model merger failed" in error_line(output)
    assert (target / "model.safetensors").read_bytes() == b"an earlier merge"


@pytest.mark.parametrize("flags, names", [
    (["--model", "./no/such/model"], ["--model ./no/such/model", "no such model folder"]),
    (["--engine_kwargs", "{bad"], ["--engine_kwargs '{bad'", "is not JSON"]),
    (["--engine_kwargs", "[1]"], ["--engine_kwargs '[1]'", "not an object"]),
])
def test_eval_names_a_missing_model_folder_and_bad_engine_kwargs(data, tiny_model_dir, tmp_path, flags, names):
    args = {"--model": str(tiny_model_dir), "--backend": "hf", "--dataset_name": str(data["good"]),
            "--output_dir": str(tmp_path / "run")}
    args.update(dict(zip(flags[::2], flags[1::2])))
    expect_failure("eval/run_offline_inference.py", *[x for kv in args.items() for x in kv], names=names)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override, names", [
    ("learning_rate=-1", ["learning_rate must be above 0", "fix:"]),
    ("attn_implementation=flash_attention_2", ["flash-attn package is not installed", "sdpa"]),
])
def test_sft_refuses_a_bad_learning_rate_or_a_missing_flash_attn_before_the_model(data, tmp_path, override, names):
    import importlib.util

    if "flash" in override and importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed here")
    expect_failure("train/sft/train_sft.py", TINY_CONFIG, f"model_name_or_path={_unloadable_model(tmp_path)}",
                   f"train_data={data['sft']}", f"output_dir={tmp_path / 'run'}", override, names=names)


# ----------------------------------- empty files, out-of-range numbers, a bare RL config, a file in an output path
@pytest.mark.parametrize("case", ["verl-empty-jsonl", "m23k-empty-source", "overlap-ngram-0", "overlap-num-proc",
                                  "e2h-negative-rollouts", "plots-zero-rollouts", "report-negative-samples",
                                  "rl-config-without-base", "output-under-a-file", "plots-greedy-as-sampling"])
def test_empty_and_out_of_range_inputs_fail_in_one_line_before_any_work(data, tmp_path, case):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    good, out = data["good"], tmp_path / "out"
    bare = tmp_path / "bare.yaml"
    bare.write_text("data:\n  train_batch_size: 8\n")
    greedy = tmp_path / "greedy.jsonl"  # one rollout a row, as a greedy eval writes
    greedy.write_text("".join(json.dumps({"dataset_name": "pmc_vqa", "dataset_index": i, "answer_label": "A",
                                          "answer": "Yes", "options": '{"A": "Yes", "B": "No"}', "num_rollouts": 1,
                                          "rollouts": [{"output_text": "<answer>A</answer>", "pred_letter": "A",
                                                        "is_correct": True}]}) + "\n" for i in range(3)))
    script, args, names = {
        "verl-empty-jsonl": ("data_process/convert_verl_format.py", [empty, tmp_path / "out.parquet"],
                             [f"{empty}: the file is empty"]),
        "m23k-empty-source": ("data_process/prepare_m23k.py", ["--source", empty, "--output", out],
                              [f"{empty}: the file is empty"]),
        "overlap-ngram-0": ("data_process/check_overlap.py", ["--train", good, "--eval", good, "--ngram", "0",
                                                              "--output_dir", out], ["--ngram", "0 is not in the range"]),
        "overlap-num-proc": ("data_process/check_overlap.py", ["--train", good, "--eval", good, "--num_proc", "-2",
                                                               "--output_dir", out], ["--num_proc", "x>=1"]),
        "e2h-negative-rollouts": ("data_process/order_easy_to_hard.py",
                                  ["--dataset_name", good, "--results_jsonl_path", good, "--num_rollouts", "-1",
                                   "--save_to_disk_path", out], ["--num_rollouts", "x>=0"]),
        "plots-zero-rollouts": ("analysis/make_plots.py", ["--pass_rate_dir", good, "--pass_rate_rollouts", "0",
                                                           "--output_dir", out], ["--pass_rate_rollouts", "x>=1"]),
        "report-negative-samples": ("analysis/make_report.py", ["--run", f"m={good}", "--samples_per_benchmark", "-1",
                                                                "--output_dir", out],
                                    ["--samples_per_benchmark", "x>=0"]),
        "rl-config-without-base": ("train/rl/preflight.py", [bare], ["composes to no GRPO config",
                                                                     "defaults: [base/grpo, _self_]"]),
        "plots-greedy-as-sampling": ("analysis/make_plots.py", ["--sampling_run", f"m={greedy}", "--output_dir", out],
                                     ["--sampling_run m: every row has one rollout", "--preset metrics_at_n"]),
        "output-under-a-file": ("data_process/convert_verl_format.py", [good, empty / "out.parquet"],
                                [f"its folder cannot be created: {empty} is a file"]),
    }[case]
    expect_failure(script, *args, names=names)
    assert not out.exists() and not (tmp_path / "out.parquet").exists()
