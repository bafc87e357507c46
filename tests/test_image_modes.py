"""--image_mode of the eval command: blank and shuffled images reach the model through the runner, the mode is part
of the run's fingerprint and record, and a bad value stops before any model loads."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from medvlthinker.inference import run_state
from medvlthinker.inference.image_modes import BLANK_GREY, IMAGE_MODES, shuffle_donors
from medvlthinker.inference.requests import RequestBuilder
from medvlthinker.inference.run_config import RunConfig
from medvlthinker.inference.runner import model_config_hash, run_rank, write_args

SMALL = 64 * 28 * 28


class ShownImages(RequestBuilder):
    """A request builder that keeps, per dataset_index, the images it put in the request (as decoded pixels)."""

    def __init__(self, processor, **kwargs):
        super().__init__(processor, **kwargs)
        self.shown: dict[int, list] = {}

    def build(self, row):
        request = super().build(row)
        self.shown[request.dataset_index] = list(request.images)
        return request


def _pixels(img) -> str:
    return hashlib.sha1(img.tobytes() + repr(img.size).encode()).hexdigest()


@pytest.fixture(scope="module")
def shown(tmp_path_factory, tiny_model_dir, tiny_processor, eval_dataset_dir):
    """The images each mode showed the tiny model, through ``run_rank`` with the transformers backend."""
    import medvlthinker.data
    from medvlthinker.inference.backends import HfBackend

    backend = HfBackend(str(tiny_model_dir), batch_size=8)
    out, loads = {}, {}
    load_unified = medvlthinker.data.load_unified
    for mode in ("as_is", "blank", "shuffled"):
        config = RunConfig(model=str(tiny_model_dir), backend="hf", dataset_name=str(eval_dataset_dir),
                           output_dir=str(tmp_path_factory.mktemp(mode)), max_tokens=1, max_pixels=SMALL,
                           image_mode=mode, progress=False)
        builder = ShownImages(tiny_processor, max_pixels=SMALL)
        calls = []
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(medvlthinker.data, "load_unified",
                       lambda *a, _calls=calls, **k: _calls.append(a) or load_unified(*a, **k))
            assert run_rank(config, 0, backend=backend, builder=builder) == 24
        out[mode], loads[mode] = builder.shown, len(calls)
    out["loads"] = loads
    return out


def test_every_mode_loads_the_data_set_once(shown):
    # shuffled draws its donor pictures from the data set the rank already holds, not from a second load
    assert shown["loads"] == {"as_is": 1, "blank": 1, "shuffled": 1}


def test_blank_images_are_uniform_grey_of_the_same_size(shown):
    for index, images in shown["as_is"].items():
        blanks = shown["blank"][index]
        assert [b.size for b in blanks] == [a.size for a in images] and images
        for blank in blanks:
            assert set(blank.getdata()) == {BLANK_GREY}


def test_shuffled_images_come_from_another_picture_of_the_same_benchmark(shown, eval_rows):
    name = {r["dataset_index"]: r["dataset_name"] for r in eval_rows}
    as_is = {i: tuple(_pixels(img) for img in imgs) for i, imgs in shown["as_is"].items()}
    moved = 0
    for index, images in shown["shuffled"].items():
        got = tuple(_pixels(img) for img in images)
        assert got != as_is[index], f"row {index} was shown its own picture"
        donors = [j for j, pics in as_is.items() if pics == got]
        assert donors and {name[j] for j in donors} == {name[index]}
        moved += 1
    assert moved == 24
    # every picture of a benchmark is still shown (a cycle, not draws with replacement)
    for bench in set(name.values()):
        rows = [i for i in as_is if name[i] == bench]
        assert {as_is[i] for i in rows} == {tuple(_pixels(img) for img in shown["shuffled"][i]) for i in rows}


def test_shuffle_is_seeded_and_a_single_picture_group_is_reported():
    names = ["a"] * 6 + ["b"]
    keys = [("p1",), ("p2",), ("p3",), ("p4",), ("p5",), ("p6",), ("p7",)]
    one, alone = shuffle_donors(names, list(range(7)), keys, seed=1)
    assert shuffle_donors(names, list(range(7)), keys, seed=1)[0] == one
    assert any(shuffle_donors(names, list(range(7)), keys, seed=s)[0] != one for s in range(2, 6))
    assert alone == [6] and sorted(one.values()) == list(range(6))
    # the row order of the data set does not change who gets whose picture
    order = [3, 0, 5, 1, 4, 2, 6]
    again, _ = shuffle_donors([names[i] for i in order], order, [keys[i] for i in order], seed=1)
    assert {i: order[p] for i, p in again.items()} == one


def test_image_mode_is_in_the_fingerprint_and_the_record(tmp_path, tiny_model_dir):
    base = dict(model=str(tiny_model_dir), backend="hf", dataset_name="d", output_dir=str(tmp_path))
    config = RunConfig(**base, image_mode="blank")
    write_args(config, 3)
    assert json.loads((tmp_path / "args.json").read_text())["args"]["image_mode"] == "blank"
    (tmp_path / "shard-000-of-001.jsonl").write_text('{"dataset_index": 0}\n')
    from dataclasses import asdict

    other = run_state.fingerprint(asdict(RunConfig(**base, image_mode="shuffled")), num_rows=3,
                                  model_config_sha256=model_config_hash(str(tiny_model_dir)))
    with pytest.raises(run_state.RunMismatch, match="image_mode: 'blank' there, 'shuffled' now"):
        run_state.check_same_run(tmp_path, other)
    # --ignore_image is --image_mode none, one spelling in the record
    assert RunConfig(**base, ignore_image=True).image_mode == "none"
    assert RunConfig(**base, image_mode="none").ignore_image is True
    assert RunConfig(**base).image_mode == "as_is" and IMAGE_MODES[0] == "as_is"


@pytest.mark.parametrize("args, message", [
    (["--image_mode", "grey"], "'grey' is not one of 'as_is', 'blank', 'shuffled', 'none'"),
    (["--image_mode", "blank", "--ignore_image"], "error: --ignore_image drops the images, --image_mode blank"),
])
def test_bad_image_mode_is_one_line_before_the_model_loads(tmp_path, args, message):
    proc = subprocess.run([sys.executable, "eval/run_offline_inference.py", "--model", str(tmp_path / "no_model"),
                           "--output_dir", str(tmp_path / "out"), *args], capture_output=True, text=True)
    assert proc.returncode != 0 and message in proc.stderr
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="fix: one of as_is, blank, shuffled, none"):
        RunConfig(model="m", output_dir="o", image_mode="grey")
