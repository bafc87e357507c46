"""The verl 3-D position-id fix (medvlthinker/compat/verl_position_ids.py): fails without it, right rows with it."""

from __future__ import annotations

import pytest
import torch

from medvlthinker.compat import verl_position_ids as fix


@pytest.fixture
def unpatched():
    """verl exactly as installed; the fix is put back afterwards if it was active."""
    with fix.FIX.state(installed=False):
        yield


@pytest.fixture
def patched():
    with fix.FIX.state(installed=True):
        yield


def test_unpatched_verl_loses_ragged_dim_after_pickle(unpatched):
    # lengths differ: the ragged index comes back as 1 from consolidate + pickle and verl unbinds the wrong dim
    with pytest.raises(RuntimeError):
        fix.check_index_select([5, 7, 3, 6], [2, 0], apply_verl_fix_first=False)


def test_unpatched_equal_lengths_give_the_forward_an_unreadable_buffer(unpatched):
    # remove-padding reads values() as (4, total tokens); equal lengths leave it (4 * B, L)
    with pytest.raises(AssertionError, match=r"values buffer \(16, 6\), the remove-padding forward reads \(4, 24\)"):
        fix.check_forward_layout([6, 6, 6, 6])


@pytest.mark.parametrize("lengths", [[6, 6, 6, 6], [5, 7, 3, 6], [4]])
def test_patched_forward_reads_every_row_in_place(patched, lengths):
    fix.check_forward_layout(lengths)


def test_unpatched_verl_own_fix_breaks_equal_lengths(unpatched):
    # the exact error seen on the GPU: GRPO rollouts of one prompt all 135 tokens long
    with pytest.raises(RuntimeError, match=r"split_with_sizes expects split_sizes to sum exactly to 135"):
        fix.check_index_select([135] * 4, [0, 1], apply_verl_fix_first=True)


@pytest.mark.parametrize(
    "lengths, indices, verl_fix_first",
    [
        ([5, 7, 3, 6], [2, 0], False),
        ([5, 7, 3, 6], [0, 1], True),
        ([135] * 4, [0, 1], True),
        ([135] * 4, [3, 1], False),
        ([4], [0], False),  # square values buffer (4, 4): both readings agree for one sample
    ],
)
def test_patched_returns_right_rows(patched, lengths, indices, verl_fix_first):
    fix.check_index_select(lengths, indices, apply_verl_fix_first=verl_fix_first)


def test_patched_chunk_and_concat_keep_rows(patched):
    from verl.utils import tensordict_utils as tu

    td, rows = fix._sample_batch([5, 7, 3, 6])
    chunks = tu.chunk_tensordict(fix._roundtrip(td), 2)
    merged = tu.concat_tensordict([fix._roundtrip(c) for c in chunks])
    got = merged["position_ids"].unbind()
    assert [tuple(r.shape) for r in got] == [(4, 5), (4, 7), (4, 3), (4, 6)]
    assert all(torch.equal(a, b) for a, b in zip(got, rows))


def test_layout_reading():
    ragged2 = torch.nested.as_nested_tensor([torch.zeros(4, 5), torch.zeros(4, 7)], layout=torch.jagged)
    ragged1 = torch.nested.as_nested_tensor([torch.zeros(4, 9), torch.zeros(4, 9)], layout=torch.jagged)
    assert fix.ragged_idx_from_layout(ragged2) == 2
    assert fix.ragged_idx_from_layout(ragged1) == 1
    # the attribute lost in pickling does not matter: the buffers decide
    ragged2._ragged_idx = 1
    assert fix.ragged_idx_from_layout(ragged2) == 2


def test_install_is_behavioural_and_reversible(unpatched):
    status = fix.status()
    assert status["needed"] is True and status["active"] is False
    assert status["failures_without_fix"], "the probe should name the failing cases for verl 0.9.1"
    assert fix.install() is True and fix.is_active()
    assert fix.probe() == []
    fix.uninstall()
    assert fix.probe() != []


def test_disabled_by_environment(unpatched, monkeypatch):
    monkeypatch.setenv(fix.ENV_DISABLE, "0")
    assert fix.install() is False
    assert not fix.is_active()
