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


def test_instruction_prompt_through_the_chat_template(tiny_processor):
    rendered = tiny_processor.apply_chat_template(
        prompts.build_messages(ROW, instruction=prompts.STEP_BY_STEP_INSTRUCTION_PROMPT), tokenize=False,
        add_generation_prompt=True)
    assert rendered == EXPECTED.replace(prompts.INSTRUCTION_PROMPT, prompts.STEP_BY_STEP_INSTRUCTION_PROMPT)
    assert 'directly after "Answer: "\n\nQuestion: What abnormality' in rendered


def _odd_images():
    # not multiples of 28, and not RGB: the modes without a chat template must keep the size and convert to RGB
    return [Image.new("RGBA", (61, 45), (10, 200, 30, 128)), Image.new("L", (30, 97), 77)]


def test_baseline_prompt_modes_render_without_template_and_keep_the_images(tiny_processor):
    from medvlthinker.inference.requests import RequestBuilder

    row = dict(ROW, images=_odd_images())
    user_text = EXPECTED.split("<|vision_end|>", 1)[1].split("<|im_end|>", 1)[0]
    for mode, prompt in (
        ("raw_image_tokens", "<image>\n<image>\n" + user_text),
        ("gemma3", "<bos><start_of_turn>user\n<start_of_image><start_of_image>" + user_text
                   + "<end_of_turn>\n<start_of_turn>model\n"),
    ):
        request = RequestBuilder(tiny_processor, prompt_mode=mode).build(row)
        assert request.prompt.encode() == prompt.encode()
        assert [(img.mode, img.size) for img in request.images] == [("RGB", (61, 45)), ("RGB", (30, 97))]
        assert request.images[1].getpixel((0, 0)) == (77, 77, 77)
        assert request.image_tokens is None and request.prompt_tokens > 0
    # the default mode still resizes with qwen-vl-utils (multiples of 28)
    default = RequestBuilder(tiny_processor).build(row)
    assert all(w % 28 == 0 and h % 28 == 0 for w, h in (img.size for img in default.images))


def test_api_request_is_the_user_text_and_png_data_urls():
    import base64
    import io

    from medvlthinker.images import to_rgb
    from medvlthinker.inference.api_backend import api_messages
    from medvlthinker.inference.requests import ApiRequestBuilder

    images = _odd_images()
    request = ApiRequestBuilder(instruction=prompts.STEP_BY_STEP_INSTRUCTION_PROMPT).build(dict(ROW, images=images))
    [message] = api_messages(request)
    assert message["role"] == "user" and [p["type"] for p in message["content"]] == ["image_url", "image_url", "text"]
    assert message["content"][2]["text"] == prompts.build_user_text(
        ROW["question"], ROW["options"], prompts.STEP_BY_STEP_INSTRUCTION_PROMPT)
    for part, original in zip(message["content"], images):
        head, data = part["image_url"]["url"].split(",", 1)
        assert head == "data:image/png;base64"
        decoded = Image.open(io.BytesIO(base64.b64decode(data)))
        assert decoded.format == "PNG" and decoded.mode == "RGB" and decoded.size == original.size
        # alpha pasted on white, as every image the project decodes (medvlthinker.images.to_rgb)
        assert list(decoded.getdata()) == list(to_rgb(original).getdata())
    assert api_messages(ApiRequestBuilder(ignore_image=True).build(dict(ROW, images=images)))[0]["content"] == [
        {"type": "text", "text": prompts.build_user_text(ROW["question"], ROW["options"])}]
