"""Converters from unified rows to the training formats: verl RL parquet and TRL SFT conversations."""


def conversion_options(func):
    """The flags both conversion scripts take (data_process/convert_*_format.py): which rows of SOURCE are read
    (``load_unified``'s split, subset, size and image paths), the PMC-VQA resize rule, how images are stored and the worker processes."""
    import click

    options = (
        click.option("--split", default=None, help="Split of a Hub data set (e.g. train)."),
        click.option("--subset", multiple=True, help="Keep only these dataset_name values (repeatable)."),
        click.option("--size", type=int, default=None, help="Keep the first N rows (smoke runs)."),
        click.option("--resize_pmc/--no_resize_pmc", default=False, show_default=True,
                     help="Apply the PMC-VQA training-image resize rule (the released sets are already resized)."),
        click.option("--num_proc", type=int, default=None, help="Worker processes for the conversion."),
        click.option("--keep_image_bytes", is_flag=True,
                     help="Store each image's bytes as they are, instead of as the original's converter writes them "
                          "(verl: re-encoded by datasets, JPEG at quality 75; SFT: resized by qwen-vl-utils)."),
        click.option("--allow_outside_images", is_flag=True,
                     help="Read image paths that lead outside SOURCE's folder (only for a data set you trust)."),
    )
    for option in reversed(options):
        func = option(func)
    return func
