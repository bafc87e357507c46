"""Outputs appear whole or not at all; an existing output survives a failed replacement."""

from __future__ import annotations

import subprocess

import pytest

from medvlthinker.staging import staged


def test_output_appears_only_when_complete(tmp_path):
    target = tmp_path / "sub" / "out.parquet"
    with staged(target) as tmp:
        assert tmp.name == ".out.parquet.partial" and tmp.parent == target.parent
        tmp.write_text("new")
        assert not target.exists()
    assert target.read_text() == "new" and not tmp.exists()


def test_existing_output_needs_overwrite_and_survives_a_failure(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "weights").write_text("old")
    with pytest.raises(FileExistsError, match=rf"{target}.*--overwrite"):
        with staged(target, directory=True):
            pass
    with pytest.raises(RuntimeError, match="interrupted"):
        with staged(target, overwrite=True, directory=True) as tmp:
            (tmp / "weights").write_text("half")
            raise RuntimeError("interrupted")
    assert (target / "weights").read_text() == "old"  # nothing already written is lost
    assert not (tmp_path / ".model.partial").exists()
    with staged(target, overwrite=True, directory=True) as tmp:
        (tmp / "weights").write_text("new")
    assert (target / "weights").read_text() == "new"


def test_text_json_and_jsonl_writes_are_whole_and_keep_the_old_file_on_failure(tmp_path):
    from medvlthinker.staging import write_json, write_jsonl, write_text

    target = tmp_path / "eval_results.jsonl"
    write_jsonl(target, [{"dataset_index": 0, "answer": "é"}])
    assert target.read_text(encoding="utf-8") == '{"dataset_index": 0, "answer": "é"}\n'

    def broken():
        yield {"dataset_index": 1}
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        write_jsonl(target, broken())
    assert target.read_text(encoding="utf-8") == '{"dataset_index": 0, "answer": "é"}\n'
    write_json(tmp_path / "accuracy.json", {"PMC": 1.0})
    write_text(tmp_path / "entry.json", "{}", private=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["accuracy.json", "entry.json", "eval_results.jsonl"]


def test_private_temporary_names_differ_per_thread(tmp_path):
    import threading

    names = []
    both_inside = threading.Barrier(2)  # both threads alive at once, so their idents differ

    def stage():
        with staged(tmp_path / "entry.json", overwrite=True, private=True) as tmp:
            names.append(tmp.name)
            tmp.write_text("{}")
            both_inside.wait(timeout=10)

    threads = [threading.Thread(target=stage) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(names)) == 2 and all(n.startswith(".entry.json.") and n.endswith(".partial") for n in names)
    assert (tmp_path / "entry.json").read_text() == "{}"


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MiB tmpfs: a real full disk (mounting needs root and the capability; skipped without them)."""
    mount = tmp_path / "full"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {proc.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_the_libraries_full_disk_errors_are_named_in_one_line(full_disk):
    import safetensors.torch
    import torch

    from medvlthinker.staging import DiskFullError, disk_full_named

    tensor = torch.zeros(1_000_000)  # 4 MB into a 1 MiB disk
    writes = {  # torch.save raises a RuntimeError without errno, safetensors its own error: neither is an OSError
        "torch.save": lambda: torch.save({"x": tensor}, full_disk / "optimizer.pt"),
        "safetensors": lambda: safetensors.torch.save_file({"x": tensor}, full_disk / "model.safetensors"),
    }
    for write in writes.values():
        with pytest.raises(DiskFullError, match=r"full: no space left on the device while saving \(0\.00 GiB free\)"):
            with disk_full_named(full_disk, "saving"):
                write()
        for leftover in full_disk.iterdir():
            leftover.unlink()


def test_other_errors_pass_through(tmp_path):
    from medvlthinker.staging import disk_full_named

    with pytest.raises(RuntimeError, match="unexpected pos"):  # a short write on a disk with room is not named full
        with disk_full_named(tmp_path, "saving"):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    with pytest.raises(ValueError):
        with disk_full_named(tmp_path, "saving"):
            raise ValueError("bad value")
