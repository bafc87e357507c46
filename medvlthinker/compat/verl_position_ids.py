"""Keep the ragged dimension of Qwen2.5-VL's 3-D position ids through verl 0.9's batch indexing.

Symptom (GRPO on Qwen2.5-VL, verl 0.9.1, tensordict 0.10, any GPU count): the run gets through rollout and reward
and then dies in the actor update::

    verl/workers/engine_workers.py train_mini_batch -> tensordict_utils.make_iterator -> index_select_tensor_dict
    RuntimeError: split_with_sizes expects split_sizes to sum exactly to 135 (input tensor's size at dimension 1),
    but got split_sizes=[4, 4, 4, 4]

Cause: verl stores the per-sample ``(4, L_i)`` mRoPE position ids (a text row plus 3 rotary rows) as one jagged
nested tensor. Which dimension is ragged depends on the data: ``torch.nested.as_nested_tensor`` makes the sequence
dimension ragged (``_ragged_idx == 2``, values ``(4, sum L_i)``) when the lengths differ, but the row dimension
(``_ragged_idx == 1``, values ``(4 * B, L)``) when every sample has the same length L, which is common in GRPO
(the n rollouts of a prompt all hit max_response_length). ``_ragged_idx`` is a Python attribute that does not
survive ``TensorDict.consolidate()`` + pickle (what Ray does between processes): it always comes back as 1. verl's
``maybe_fix_3d_position_ids`` then sets it to 2 unconditionally, which repairs the first layout and breaks the
second; where it is not called before indexing, the first layout breaks instead.

A second consumer needs more than the right ragged dimension: with ``use_remove_padding`` verl's FSDP engine
(``verl/workers/engine/fsdp/transformer_impl.py``, ``position_ids.values().unsqueeze(1)``) reads the values buffer
itself as ``(4, total_tokens)``; the equal-length layout ``(4 * B, L)`` makes Qwen2-VL's forward raise
"position_ids should be a 3D tensor of shape (4, batch_size, seq_length)".

Fix: read the layout from the tensor itself (the shape of its values buffer against its offsets) and rebuild the
nested tensor in one canonical layout, the sequence dimension ragged with values ``(4, sum L_i)`` (an equal-length
buffer is re-laid out, not just re-labelled), before verl indexes, chunks or concatenates a batch and wherever verl
calls its own ``maybe_fix_3d_position_ids``. Installed only when a behavioural probe shows the installed verl needs
it (so it steps aside by itself once verl is fixed), in every Ray worker and in the driver, as one of
:mod:`medvlthinker.compat.verl_fixes`. Set ``MEDVLTHINKER_VERL_POSITION_IDS_FIX=0`` to disable it.
docs/known-issues.md has a minimal reproduction for reporting upstream.
"""

from __future__ import annotations

import functools
import pickle

from medvlthinker.compat.patch import Patch, env_is
from medvlthinker.compat.probed_fix import ProbedFix

KEY = "position_ids"
ENV_DISABLE = "MEDVLTHINKER_VERL_POSITION_IDS_FIX"
# mRoPE position ids have 3 (rotary) or 4 (text + rotary) rows; used only to settle a layout that fits both readings
MAX_POSITION_ROWS = 4
_PATCHED_TU = ("index_select_tensor_dict", "chunk_tensordict", "concat_tensordict")

_saved: dict = {"originals": {}, "maybe_fix_code": None}


# ---------------------------------------------------------------------------------------------------- the repair
def ragged_idx_from_layout(nt) -> int | None:
    """The ragged dimension a 3-D jagged nested tensor's buffers imply (1 or 2), or None when they fit neither.

    Ragged 2: values ``(C, sum L_i)`` and offsets ending at ``sum L_i``. Ragged 1: values ``(C * B, L)`` and
    offsets stepping by C. A buffer that fits both (square values) is read as ragged 2 when it has at most
    ``MAX_POSITION_ROWS`` rows; the two readings coincide for a batch of one.
    """
    values, offsets = nt.values(), nt.offsets()
    if values.dim() != 2 or offsets is None:
        return None
    total = int(offsets[-1])
    steps = offsets.diff()
    fits2 = values.shape[1] == total
    fits1 = values.shape[0] == total and bool((steps == steps[0]).all())
    if fits1 and fits2:
        return 2 if values.shape[0] <= MAX_POSITION_ROWS else 1
    return 2 if fits2 else 1 if fits1 else None


def canonical(nt):
    """The same rows as ``nt`` with the sequence dimension ragged: values ``(C, sum L_i)``, offsets over columns.

    An equal-length buffer ``(C * B, L)`` (ragged rows) is re-laid out to ``(C, B * L)``; a buffer that already has
    ragged columns only gets its ragged index back. None when the buffers fit neither layout.
    """
    import torch

    ragged = ragged_idx_from_layout(nt)
    if ragged is None:
        return None
    values, offsets = nt.values(), nt.offsets()
    if ragged == 1:
        batch = offsets.numel() - 1
        rows, length = values.shape[0] // batch, values.shape[1]
        values = values.reshape(batch, rows, length).permute(1, 0, 2).reshape(rows, batch * length)
        offsets = torch.arange(batch + 1, dtype=offsets.dtype, device=offsets.device) * length
    elif getattr(nt, "_ragged_idx", None) == 2:
        return nt
    return torch.nested.nested_tensor_from_jagged(values, offsets=offsets, jagged_dim=2)


def restore_position_ids(data) -> None:
    """Rebuild ``data["position_ids"]`` (a TensorDict entry) in the canonical layout (:func:`canonical`)."""
    import torch

    if data is None or KEY not in data.keys():
        return
    nt = data.get(KEY)
    if not (isinstance(nt, torch.Tensor) and nt.is_nested and nt.dim() == 3 and nt.layout == torch.jagged):
        return
    fixed = canonical(nt)
    if fixed is not None and fixed is not nt:
        data[KEY] = fixed


def _maybe_fix_trampoline(data):
    # Replaces the body of verl's maybe_fix_3d_position_ids, so modules that imported it by name get it too.
    from medvlthinker.compat.verl_position_ids import restore_position_ids

    restore_position_ids(data)


def _restoring(fn, many: bool = False):
    @functools.wraps(fn)
    def wrapper(data, *args, **kwargs):
        for td in data if many else (data,):
            restore_position_ids(td)
        return fn(data, *args, **kwargs)

    wrapper.__medvlthinker_original__ = fn
    return wrapper


# ------------------------------------------------------------------------------------------------------ the probe
def _roundtrip(td):
    return pickle.loads(pickle.dumps(td.consolidate()))


def _sample_batch(lengths: list[int]):
    """A batch the way verl's left_right_2_no_padding builds it: (4, L_i) position ids as one jagged tensor."""
    import torch
    from tensordict import TensorDict

    rows = [torch.arange(4 * n).reshape(4, n) + 1000 * i for i, n in enumerate(lengths)]
    ids = torch.nested.as_nested_tensor([torch.arange(n) for n in lengths], layout=torch.jagged)
    nested = torch.nested.as_nested_tensor(rows, layout=torch.jagged)
    return TensorDict({KEY: nested, "input_ids": ids}, batch_size=[len(lengths)]), rows


def check_index_select(lengths: list[int], indices: list[int], apply_verl_fix_first: bool) -> None:
    """Send a batch through consolidate + pickle, then select ``indices`` with verl; raise unless rows match.

    With ``apply_verl_fix_first`` verl's own ``maybe_fix_3d_position_ids`` runs first and the rows come from
    ``make_iterator`` (the order of ``train_mini_batch``); otherwise ``index_select_tensor_dict`` runs directly.
    """
    import torch
    from verl.utils import tensordict_utils as tu

    td, rows = _sample_batch(lengths)
    td = _roundtrip(td)
    if apply_verl_fix_first:
        tu.maybe_fix_3d_position_ids(td)
        # make_iterator without shuffling yields rows in order: its first mini-batch is rows 0..k-1
        indices = list(range(len(indices)))
        selected = next(tu.make_iterator(td, mini_batch_size=len(indices), epochs=1))
    else:
        selected = tu.index_select_tensor_dict(td, indices)
    got = selected[KEY].unbind()
    if len(got) != len(indices):
        raise AssertionError(f"selected {len(got)} rows, expected {len(indices)}")
    for row, i in zip(got, indices):
        if row.shape != rows[i].shape or not torch.equal(row, rows[i]):
            raise AssertionError(f"row {i}: got shape {tuple(row.shape)}, expected {tuple(rows[i].shape)}")


def check_forward_layout(lengths: list[int]) -> None:
    """After consolidate + pickle and verl's ``maybe_fix_3d_position_ids``, the values buffer must be what the
    remove-padding forward reads, ``(4, sum L_i)``, with each row's columns in place; raise otherwise."""
    import torch
    from verl.utils import tensordict_utils as tu

    td, rows = _sample_batch(lengths)
    td = _roundtrip(td)
    tu.maybe_fix_3d_position_ids(td)
    values = td[KEY].values()
    expected = torch.cat(rows, dim=1)
    if tuple(values.shape) != tuple(expected.shape) or not torch.equal(values, expected):
        raise AssertionError(f"values buffer {tuple(values.shape)}, the remove-padding forward reads "
                             f"{tuple(expected.shape)}")


PROBES = (
    ("lengths differ, index_select after pickle", [5, 7, 3, 6], [2, 0], False),
    ("equal lengths, verl's fix then make_iterator", [6, 6, 6, 6], [0, 1], True),
    ("lengths differ, verl's fix then make_iterator", [5, 7, 3, 6], [0, 1], True),
    ("equal lengths, remove-padding forward layout", [6, 6, 6, 6], None, None),
)


def probe() -> list[str]:
    """Run the probes against the functions installed now; the descriptions of those that fail."""
    failures = []
    for name, lengths, indices, verl_fix in PROBES:
        try:
            if indices is None:
                check_forward_layout(lengths)
            else:
                check_index_select(lengths, indices, verl_fix)
        except Exception as exc:  # any failure means verl cannot index these batches
            failures.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
    return failures


# ------------------------------------------------------------------------------------------- install / uninstall
def _apply() -> None:
    from verl.utils import tensordict_utils as tu

    for name in _PATCHED_TU:
        original = getattr(tu, name)
        _saved["originals"][name] = original
        setattr(tu, name, _restoring(original, many=name == "concat_tensordict"))
    fix = tu.maybe_fix_3d_position_ids
    _saved["maybe_fix_code"] = fix.__code__
    fix.__code__ = _maybe_fix_trampoline.__code__


def _remove() -> None:
    from verl.utils import tensordict_utils as tu

    for name, original in _saved["originals"].items():
        setattr(tu, name, original)
    tu.maybe_fix_3d_position_ids.__code__ = _saved["maybe_fix_code"]
    _saved["originals"].clear()


FIX = ProbedFix("verl_position_ids", "verl 3-D position-id fix", ENV_DISABLE, probe, _apply, _remove)
needed, is_active, install, uninstall, status = FIX.needed, FIX.is_active, FIX.install, FIX.uninstall, FIX.status

PATCH = Patch(
    name="verl_position_ids",
    target="verl.utils.tensordict_utils.index_select_tensor_dict, chunk_tensordict, concat_tensordict, "
           "maybe_fix_3d_position_ids",
    upstream="verl 0.9.1 verl/utils/tensordict_utils.py:910 maybe_fix_3d_position_ids (tensordict 0.10)",
    symptom="GRPO on Qwen2.5-VL dies in the actor update: split_with_sizes expects split_sizes to sum exactly to ...",
    library="verl", probe=needed, install=install, uninstall=uninstall, is_active=is_active,
    where="the driver of every RL run and every Ray worker (worker_process_setup_hook), any machine",
    switch=f"{ENV_DISABLE}=0", switched=env_is(ENV_DISABLE, "0"),
)
