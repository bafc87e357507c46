"""The paper's prompt as the model sees it: rendered by the real Qwen2.5-VL chat template, byte for byte."""

from __future__ import annotations

import json

from PIL import Image

from medvlthinker import prompts

ROW = {
    "images": [Image.new("RGB", (64, 64), (200, 30, 30))],
    "question": "What abnormality is seen in the left lower lobe?",
    "options": json.dumps({"A": "Consolidation", "B": "Pneumothorax", "C": "Effusion", "D": "Normal"}),
    "answer_label": "A",
    "answer": "Consolidation",
    "dataset_name": "pmc_vqa",
    "dataset_index": 0,
}

# Written out by hand from docs/protocol.md section 2: default system turn, the image first, the instruction with its
# literal backslash-n (two characters), a blank line, the question, the options, the generation prompt.
EXPECTED = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
    "You will solve a problem/request. You should provide your thoughts within <think> </think> tags before "
    "providing the answer.\\nWrite your final answer within <answer> </answer> tags.\n\n"
    "Question: What abnormality is seen in the left lower lobe?\n\nOptions:"
    "\n\nA. Consolidation\n\nB. Pneumothorax\n\nC. Effusion\n\nD. Normal"
    "<|im_end|>\n<|im_start|>assistant\n"
)


def test_one_image_prompt_is_byte_exact(tiny_processor):
    rendered = tiny_processor.apply_chat_template(prompts.build_messages(ROW), tokenize=False,
                                                  add_generation_prompt=True)
    assert rendered == EXPECTED
    assert rendered.encode() == EXPECTED.encode()
    assert "\\n" in rendered and rendered.count("<|image_pad|>") == 1


def test_text_only_prompt_has_no_vision_tokens(tiny_processor):
    rendered = tiny_processor.apply_chat_template(prompts.build_messages(dict(ROW, images=None)), tokenize=False,
                                                  add_generation_prompt=True)
    assert rendered == EXPECTED.replace("<|vision_start|><|image_pad|><|vision_end|>", "")


def test_verl_string_prompt_carries_the_same_user_text():
    assert prompts.build_verl_prompt(ROW) == "<image>" + prompts.build_user_text(ROW["question"], ROW["options"])
    user_turn = EXPECTED.split("<|vision_end|>", 1)[1].split("<|im_end|>", 1)[0]
    assert prompts.build_verl_prompt(ROW)[len("<image>"):] == user_turn
