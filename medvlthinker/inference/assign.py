"""Which rows each data-parallel rank generates, and how evenly that spreads the work.

The evaluation set is ordered by benchmark and answer lengths differ by benchmark (MMMU and MedXpertQA answers
are about twice as long as VQA-RAD's), so contiguous shards leave the rank holding the long benchmarks running
well after the others: :func:`interleaved_positions` (rank r takes rows r, r + world, r + 2 world, ...) is what
the runner uses; :func:`contiguous_positions` is the original's split, kept for comparison.
"""

from __future__ import annotations

from collections.abc import Sequence

from medvlthinker.inference.records import shard_bounds


def interleaved_positions(num_rows: int, rank: int, world: int) -> range:
    """Row positions of ``rank`` out of ``world``: every ``world``-th row starting at ``rank``.

    >>> [list(interleaved_positions(7, r, 3)) for r in range(3)]
    [[0, 3, 6], [1, 4], [2, 5]]
    """
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside 0..{world - 1}; fix: --node_rank < --node_size")
    return range(rank, num_rows, world)


def contiguous_positions(num_rows: int, rank: int, world: int) -> range:
    """The original's split: ``world`` contiguous blocks (the first ``num_rows % world`` one row longer).

    >>> [list(contiguous_positions(7, r, 3)) for r in range(3)]
    [[0, 1, 2], [3, 4], [5, 6]]
    """
    return range(*shard_bounds(num_rows, rank, world))


ASSIGNMENTS = {"interleaved": interleaved_positions, "contiguous": contiguous_positions}


def queue_work(work: Sequence[float], world: int) -> list[float]:
    """Total work of each rank when the ranks share one queue (the Ray pool): the rows are taken in order, each by
    the rank with the least work so far, as an engine that frees up first takes the next row.

    >>> queue_work([4, 1, 1, 1, 1], 2)
    [4.0, 4.0]
    """
    totals = [0.0] * world
    for cost in work:
        rank = min(range(world), key=totals.__getitem__)
        totals[rank] += cost
    return totals


def rank_work(work: Sequence[float], world: int, assignment: str = "interleaved") -> list[float]:
    """Total work of each rank when row ``i`` costs ``work[i]`` (e.g. its generated tokens); ``assignment`` is
    ``interleaved``, ``contiguous`` or ``queue`` (:func:`queue_work`).

    >>> rank_work([1, 1, 4, 4], 2, "contiguous"), rank_work([1, 1, 4, 4], 2, "interleaved")
    ([2, 8], [5, 5])
    """
    if assignment == "queue":
        return queue_work(work, world)
    try:
        positions = ASSIGNMENTS[assignment]
    except KeyError:
        raise ValueError(f"unknown assignment {assignment!r}; fix: one of {sorted(ASSIGNMENTS) + ['queue']}") from None
    return [sum(work[i] for i in positions(len(work), rank, world)) for rank in range(world)]


def slowest_share(work: Sequence[float], world: int, assignment: str = "interleaved") -> float:
    """The slowest rank's work over the mean rank's: 1.0 is perfect balance; the run takes this many times as
    long as a perfectly balanced one (parallel efficiency is its inverse).

    >>> slowest_share([1, 1, 4, 4], 2, "contiguous"), slowest_share([1, 1, 4, 4], 2, "interleaved")
    (1.6, 1.0)
    """
    per_rank = rank_work(work, world, assignment)
    mean = sum(per_rank) / world
    return max(per_rank) / mean if mean else 1.0


def recorded_work(records) -> list[int]:
    """Generated tokens per row (all rollouts) of a recorded run, in dataset_index order.

    Records written before the runner kept token counts raise, naming the row and the fix.
    """
    work = []
    for record in sorted(records, key=lambda r: int(r["dataset_index"])):
        try:
            work.append(sum(int(r["output_tokens"]) for r in record["rollouts"]))
        except KeyError:
            raise ValueError(
                f"record dataset_name={record.get('dataset_name')!r}, dataset_index={record.get('dataset_index')} "
                f"has no output_tokens (written before the runner recorded token counts); fix: rerun the "
                f"evaluation with this version, or use --eval_set_means"
            ) from None
    return work
