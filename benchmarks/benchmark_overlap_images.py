"""Time and memory of the near-duplicate image check (data_process/check_overlap.py) at the paper's sizes: 8k
evaluation images against 177k PMC-VQA training images.

Two parts, each measured where it is cheap to measure in full:

1. hashing (decode, pixel hash, pHash of every image; the part that grows with the images' pixels): the real
   ``find_overlap`` on ``--sample_eval`` x ``--sample_train`` synthetic JPEG scans of ``--image_size``, with each
   ``--num_proc``; images per second, and the seconds for all images at that rate.
2. the index (multi-index hashing and the distance check): the real :class:`NearImageIndex` over ``--eval_images``
   hashes queried with ``--train_images`` hashes, at full size. The hashes are clustered like those of one
   modality (copies of a pool of real pHashes of distinct scans, 12 random bits flipped), which gives more
   candidates than uniform hashes would.

Peak memory is the process's maximum resident set (with --num_proc > 1 the workers hold one image each).

    python benchmarks/benchmark_overlap_images.py --num_proc 1 --num_proc 2
"""

from __future__ import annotations

import io
import random
import resource
import time

import click

from medvlthinker import cli


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _scan_rows(n: int, start: int, size: int, name: str) -> list[dict]:
    from medvlthinker.demo import synthetic, vocabulary

    rows = []
    for k in range(n):
        buf = io.BytesIO()
        synthetic.draw_scan(start + k, (size, size * 4 // 5)).save(buf, format="JPEG", quality=90)
        rows.append(vocabulary.row(question=f"Question {start + k}?", options={"A": "Yes", "B": "No"}, label="A",
                                   images=[{"bytes": buf.getvalue(), "path": None}], reasoning=None,
                                   dataset_name=name, dataset_index=start + k))
    return rows


@cli.command()
@click.option("--eval_images", type=int, default=8_000, show_default=True, help="Eval hashes in the index.")
@click.option("--train_images", type=int, default=177_000, show_default=True, help="Train hashes queried.")
@click.option("--sample_eval", type=int, default=100, show_default=True, help="Eval scans hashed for the rate.")
@click.option("--sample_train", type=int, default=400, show_default=True, help="Train scans hashed for the rate.")
@click.option("--image_size", type=int, default=512, show_default=True, help="Width of the scans (JPEG, 5:4).")
@click.option("--num_proc", "num_procs", type=int, multiple=True, default=(1, 2), show_default=True)
@click.option("--threshold", type=int, default=None, help="Hamming threshold (default: the check's).")
def main(eval_images, train_images, sample_eval, sample_train, image_size, num_procs, threshold):
    """Print the hashing rate per --num_proc, the index's time at full size, and the peak memory."""
    import datasets
    import numpy as np

    from medvlthinker.curate.near_duplicates import DEFAULT_IMAGE_THRESHOLD, NearImageIndex, check_image_threshold
    from medvlthinker.curate.overlap import find_overlap, perceptual_hash
    from medvlthinker.data import to_dataset
    from medvlthinker.demo import synthetic

    threshold = check_image_threshold(DEFAULT_IMAGE_THRESHOLD if threshold is None else threshold)
    datasets.disable_caching()
    eval_ds = to_dataset(_scan_rows(sample_eval, 0, image_size, "pmc_vqa"))
    train_ds = to_dataset(_scan_rows(sample_train, 10**6, image_size, "pmc_vqa"))
    images = sample_eval + sample_train
    total = eval_images + train_images
    for num_proc in num_procs:
        start = time.perf_counter()
        find_overlap(train_ds, eval_ds, near_images=True, image_threshold=threshold, num_proc=num_proc)
        seconds = time.perf_counter() - start
        rate = images / seconds
        click.echo(f"hashing, num_proc {num_proc}: {images} images ({image_size} px JPEG) in {seconds:.1f} s = "
                   f"{rate:.1f} images/s; {total} images -> {total / rate / 60:.1f} min")

    rng = random.Random(0)
    pool = [perceptual_hash(synthetic.draw_scan(seed, (256, 204))) for seed in range(300)]

    def clustered(n: int) -> list[int]:
        return [rng.choice(pool) ^ sum(1 << b for b in rng.sample(range(64), 12)) for _ in range(n)]

    eval_hashes, train_hashes = clustered(eval_images), clustered(train_images)
    start = time.perf_counter()
    index = NearImageIndex(eval_hashes, threshold=threshold)
    built = time.perf_counter() - start
    q, i, d = index.pairs(train_hashes)
    seconds = time.perf_counter() - start
    click.echo(f"index, threshold {threshold}: {eval_images} eval x {train_images} train hashes: built in "
               f"{built:.2f} s, queried in {seconds - built:.1f} s ({len(q)} pairs within the threshold; "
               f"{int(np.bincount(d).argmax()) if len(d) else '-'} bits the commonest distance)")
    click.echo(f"peak memory of this process: {_peak_rss_gb():.2f} GB")


if __name__ == "__main__":
    main()
