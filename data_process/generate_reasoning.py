"""A teacher answers every PMC-VQA training question three times; the runner records it (docs/data.md).

    python data_process/generate_reasoning.py --model Qwen/Qwen2.5-VL-72B-Instruct --dp_size 8 \
        --dataset_name UCSC-VLAA/MedVLThinker-pmc_vqa --output_dir outputs/teacher/pmc_vqa
    python data_process/merge_reasoning.py --dataset_name UCSC-VLAA/MedVLThinker-pmc_vqa \
        --records outputs/teacher/pmc_vqa --output data/local/pmc_vqa-reasoning

This is eval/run_offline_inference.py with the teacher's sampling (split train, n 3, temperature 1.0, top_p 1.0,
max_tokens 4096, seed 42) put first; every flag of the runner is accepted, and one given here overrides the
teacher's; --preset NAME replaces the teacher's sampling by the preset's. The output directory is the runner's (shard files, eval_results.jsonl, args.json); rerunning resumes.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from medvlthinker import cli
from medvlthinker.prepare.reasoning import teacher_runner_args

RUNNER = Path(__file__).resolve().parents[1] / "eval" / "run_offline_inference.py"


@cli.entry_point
def main(args: list[str]) -> None:
    spec = importlib.util.spec_from_file_location("run_offline_inference", RUNNER)
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    runner.main.main(args=args if "--help" in args else teacher_runner_args(args), prog_name=Path(__file__).name)


if __name__ == "__main__":
    main()
