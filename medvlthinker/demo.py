"""``make demo``: the pipeline on the embedded default (tiny random Qwen2.5-VL, bundled synthetic data), on CPU.

For now: build the tiny model, build one synthetic question with the paper's prompt, and generate an answer with
vLLM's CPU build, graded with the protocol's grader.
"""

from __future__ import annotations

import os

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    from vllm import LLM, SamplingParams

    from medvlthinker import grading, prompts, synthetic
    from medvlthinker.tiny import tiny_model_path

    model = tiny_model_path()
    row = synthetic.make_eval_rows(rows_per_benchmark=1, seed=0)[0]
    llm = LLM(model=str(model), dtype="float32", enforce_eager=True, max_model_len=2048,
              limit_mm_per_prompt={"image": 2}, seed=42)
    prompt = llm.get_tokenizer().apply_chat_template(
        prompts.build_messages(row), tokenize=False, add_generation_prompt=True)
    out = llm.generate([{"prompt": prompt, "multi_modal_data": {"image": row["images"]}}],
                       SamplingParams(temperature=0.0, max_tokens=64, seed=42))[0].outputs[0].text
    graded = grading.grade_rollout(out, row, mode="regrade")
    print("\n=== prompt ===\n" + prompt)
    print("=== generated answer (tiny random model: expect noise) ===\n" + out)
    print(f"=== graded: pred_letter={graded['pred_letter']!r} is_correct={graded['is_correct']} "
          f"(gold {row['answer_label']}. {row['answer']})")


if __name__ == "__main__":
    main()
