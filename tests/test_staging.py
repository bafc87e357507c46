"""Outputs appear whole or not at all; an existing output survives a failed replacement."""

from __future__ import annotations

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
