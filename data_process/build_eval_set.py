"""Rebuild the evaluation set from its sources (docs/eval_set.md); the released set stays the default.

    export OPENAI_API_KEY=...   # only for rows whose options are not in the cache
    python data_process/build_eval_set.py --options_cache data/local/option_cache \
        --medxpertqa data/raw/MedXpertQA --output data/local/medvlthinker_eval

Sources are Hub names or local copies of the repositories (MedXpertQA: a local copy with images/ unpacked).
The options of the closed PathVQA, SLAKE and VQA-RAD questions are written by an LLM on an OpenAI-compatible API
and cached per row; a rerun asks only for rows not in the cache. Failed rows are listed by dataset_index and
source row in <output>.report.json.
"""

from __future__ import annotations

import click

from medvlthinker import cli
from medvlthinker.inference.openai_client import API_BASE_ENV, API_KEY_ENV
from medvlthinker.prepare import eval_set, option_writer


@cli.command()
@click.option("--adaptllm", default=eval_set.ADAPTLLM, show_default=True,
              help="AdaptLLM/biomed-VQA-benchmark, or a local copy (pmc_vqa/, pathvqa/, SLAKE/, vqa_rad/).")
@click.option("--mmmu", default=eval_set.MMMU, show_default=True,
              help="MMMU/MMMU, or a local copy (<Subject>/validation-*.parquet, dev-*.parquet).")
@click.option("--medxpertqa", default=eval_set.MEDXPERTQA, show_default=True,
              help="TsinghuaC3I/MedXpertQA as a local copy (MM/test.jsonl and images/).")
@click.option("--medxpertqa_images", default=None, help="MedXpertQA's image folder [default: <medxpertqa>/images].")
@click.option("--output", required=True, help="Output: a save_to_disk directory, or a .parquet file.")
@click.option("--options_cache", required=True,
              help="Folder of per-row options (<key>.json); the original recipe's extract_options cache reads as is.")
@click.option("--option_model", default=option_writer.DEFAULT_MODEL, show_default=True, help="The LLM writing options.")
@click.option("--api_base", default=None,
              help=f"OpenAI-compatible endpoint [default: ${API_BASE_ENV}, else OpenAI].")
@click.option("--api_key_env", default=API_KEY_ENV, show_default=True,
              help="Environment variable holding the API key (the key is never written anywhere).")
@click.option("--workers", type=int, default=8, show_default=True, help="Rows asked for options at a time.")
@click.option("--max_tries", type=click.IntRange(min=1), default=option_writer.MAX_TRIES, show_default=True,
              help="Tries per row until the answer is among the written options.")
@click.option("--on_failure", type=click.Choice(eval_set.ON_FAILURE), default="error", show_default=True,
              help="error: write nothing when a row fails; skip: write the others (failed indices stay unused).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
@click.option("--allow_outside_images", is_flag=True,
              help="Read image paths that lead outside each source's folder (only for sources you trust).")
def main(adaptllm, mmmu, medxpertqa, medxpertqa_images, output, options_cache, option_model, api_base, api_key_env,
         workers, max_tries, on_failure, overwrite, allow_outside_images):
    sources = eval_set.Sources(adaptllm=adaptllm, mmmu=mmmu, medxpertqa=medxpertqa,
                               medxpertqa_images=medxpertqa_images, allow_outside_images=allow_outside_images)
    writer = option_writer.OpenAIChat(option_model, base_url=api_base, api_key_env=api_key_env)
    report = eval_set.build_eval_set(sources, output, complete=writer, options_cache=options_cache,
                                     on_failure=on_failure, overwrite=overwrite, workers=workers,
                                     max_tries=max_tries, option_model=option_model)
    click.echo(f"{report.summary()}; saved to {output}, report in {output}.report.json")


if __name__ == "__main__":
    main()
