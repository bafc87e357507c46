"""The unified row schema (docs/protocol.md section 1)."""

from __future__ import annotations

import doctest
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import medvlthinker.schema as schema
from medvlthinker.schema import COLUMNS, REQUIRED_COLUMNS, SchemaError, parse_options, validate_row, validate_rows


def make_row(**overrides):
    row = {
        "images": None,
        "question": "Is the lesion on the left?",
        "options": json.dumps({"A": "Yes", "B": "No"}),
        "answer_label": "B",
        "answer": "No",
        "reasoning": None,
        "dataset_name": "slake_closed",
        "dataset_index": 17,
        "hash": None,
        "misc": None,
    }
    row.update(overrides)
    return row


def test_doctests():
    assert doctest.testmod(schema).failed == 0


def test_columns_are_the_protocol_columns_in_order():
    assert COLUMNS == (
        "images", "question", "options", "answer_label", "answer", "reasoning",
        "dataset_name", "dataset_index", "hash", "misc",
    )
    assert set(REQUIRED_COLUMNS) <= set(COLUMNS)
    assert "images" not in REQUIRED_COLUMNS and "reasoning" not in REQUIRED_COLUMNS


def test_schema_error_is_a_value_error_naming_row_problem_and_fix():
    err = SchemaError("bad thing", dataset_name="pmc_vqa", dataset_index=5, fix="do the other thing")
    assert isinstance(err, ValueError)
    text = str(err)
    assert "pmc_vqa" in text and "dataset_index=5" in text
    assert "bad thing" in text and "fix: do the other thing" in text


# ---- parse_options ----------------------------------------------------------------------------------------------


def test_parse_options_accepts_json_string_and_dict_and_keeps_order():
    text = '{"A": "Yes", "B": "No", "C": "Maybe"}'
    assert parse_options(text) == {"A": "Yes", "B": "No", "C": "Maybe"}
    assert list(parse_options(text)) == ["A", "B", "C"]
    assert parse_options({"A": "x", "B": "y"}) == {"A": "x", "B": "y"}


@pytest.mark.parametrize(
    "options, fragment",
    [
        ("not json", "not valid JSON"),
        ('["A", "B"]', "JSON object"),
        ("{}", "empty"),
        ('{"B": "x", "A": "y"}', "letters A, B in order"),
        ('{"A": "x", "C": "y"}', "letters A, B in order"),
        ('{"a": "x", "b": "y"}', "letters A, B in order"),
        ('{"A": "x", "B": 2}', "option B text must be a string"),
        (42, "JSON object string or a dict"),
    ],
)
def test_parse_options_rejects(options, fragment):
    with pytest.raises(SchemaError, match="fix:") as info:
        parse_options(options)
    assert fragment in str(info.value)


def test_parse_options_non_strict_takes_any_object_in_its_order():
    assert parse_options('{"B": "x", "A": 1}', strict=False) == {"B": "x", "A": "1"}
    assert list(parse_options('{"B": "x", "A": 1}', strict=False)) == ["B", "A"]
    with pytest.raises(SchemaError):
        parse_options("[1]", strict=False)


# ---- validate_row -----------------------------------------------------------------------------------------------


def test_valid_rows_pass():
    assert validate_row(make_row()) is None
    assert validate_row(make_row(images=["img0", "img1"])) is None
    text_only = make_row()
    del text_only["images"], text_only["reasoning"], text_only["hash"], text_only["misc"]
    assert validate_row(text_only) is None
    assert validate_row(make_row(reasoning="Because.", hash="ab12", misc='{"image_id": 3}')) is None


def test_answer_label_must_be_a_key_of_options():
    with pytest.raises(SchemaError) as info:
        validate_row(make_row(answer_label="C"))
    text = str(info.value)
    assert "slake_closed" in text and "17" in text
    assert "answer_label 'C' is not a key of options ['A', 'B']" in text
    assert "fix:" in text


def test_answer_must_equal_the_labelled_option_text():
    with pytest.raises(SchemaError, match=r"answer 'Yes' differs from options\['B'\] = 'No'"):
        validate_row(make_row(answer="Yes"))
    # exact comparison: case and whitespace count
    with pytest.raises(SchemaError):
        validate_row(make_row(answer="no"))
    with pytest.raises(SchemaError):
        validate_row(make_row(answer="No "))


@pytest.mark.parametrize("index", ["17", 17.0, True, None])
def test_dataset_index_must_be_an_int(index):
    with pytest.raises(SchemaError, match="dataset_index must be an int"):
        validate_row(make_row(dataset_index=index))


@pytest.mark.parametrize("images", ["img.png", ("a", "b"), {"bytes": b"x"}])
def test_images_must_be_none_or_a_list(images):
    with pytest.raises(SchemaError, match="images must be a list"):
        validate_row(make_row(images=images))


def test_missing_required_column_is_named():
    row = make_row()
    del row["answer"]
    with pytest.raises(SchemaError, match=r"missing column\(s\) \['answer'\]"):
        validate_row(row)


def test_options_error_names_the_row():
    with pytest.raises(SchemaError) as info:
        validate_row(make_row(options='{"B": "No", "A": "Yes"}'))
    assert "dataset_index=17" in str(info.value) and "in order" in str(info.value)


@pytest.mark.parametrize("column, value", [("reasoning", 3), ("misc", {"a": 1}), ("hash", b"x")])
def test_optional_text_columns_must_be_strings(column, value):
    with pytest.raises(SchemaError, match=f"{column} must be a string or None"):
        validate_row(make_row(**{column: value}))


def test_image_decoding_is_pluggable_and_names_the_image():
    decoded = []

    def decoder(image):
        if image == "broken":
            raise OSError("cannot identify image file")
        decoded.append(image)

    row = make_row(images=["ok0", "broken", "ok2"])
    # without check_images (or without a decoder) images are not decoded
    validate_row(row, image_decoder=decoder)
    validate_row(row, check_images=True)
    assert decoded == []
    with pytest.raises(SchemaError) as info:
        validate_row(row, check_images=True, image_decoder=decoder)
    text = str(info.value)
    assert "image 1 of 3 cannot be decoded" in text and "OSError" in text and "dataset_index=17" in text
    assert decoded == ["ok0"]
    validate_row(make_row(images=["a", "b"]), check_images=True, image_decoder=decoder)
    assert decoded == ["ok0", "a", "b"]


# ---- validate_rows ----------------------------------------------------------------------------------------------


def test_validate_rows_counts_and_passes_keywords():
    rows = [make_row(dataset_index=i) for i in range(5)]
    assert validate_rows(rows) == 5
    assert validate_rows(iter(rows)) == 5
    assert validate_rows([]) == 0
    bad = [make_row(dataset_index=0), make_row(dataset_index=1, images=["x"])]

    def decoder(image):
        raise ValueError("truncated")

    with pytest.raises(SchemaError, match="position 1"):
        validate_rows(bad, check_images=True, image_decoder=decoder)


def test_validate_rows_names_both_duplicates():
    rows = [
        make_row(dataset_index=0, dataset_name="pmc_vqa"),
        make_row(dataset_index=1),
        make_row(dataset_index=0, dataset_name="vqa_rad_closed"),
    ]
    with pytest.raises(SchemaError) as info:
        validate_rows(rows)
    text = str(info.value)
    assert "duplicate dataset_index 0" in text
    assert "position 0 (dataset_name='pmc_vqa')" in text
    assert "position 2 (dataset_name='vqa_rad_closed')" in text


def test_validate_rows_names_the_position_of_a_bad_row():
    rows = [make_row(dataset_index=0), make_row(dataset_index=1, answer="Yes")]
    with pytest.raises(SchemaError, match=r"dataset_index=1; position 1\): answer 'Yes' differs"):
        validate_rows(rows)


# ---- properties -------------------------------------------------------------------------------------------------

option_texts = st.lists(st.text(min_size=0, max_size=12), min_size=1, max_size=8)


@settings(deadline=None)
@given(texts=option_texts, data=st.data(), index=st.integers(min_value=0, max_value=10**9))
def test_any_well_formed_row_validates(texts, data, index):
    options = {chr(65 + i): t for i, t in enumerate(texts)}
    label = data.draw(st.sampled_from(sorted(options)))
    row = make_row(options=json.dumps(options), answer_label=label, answer=options[label], dataset_index=index)
    validate_row(row)
    assert parse_options(row["options"]) == options


@settings(deadline=None)
@given(texts=option_texts, wrong=st.text(max_size=12))
def test_answer_text_other_than_the_option_is_rejected(texts, wrong):
    options = {chr(65 + i): t for i, t in enumerate(texts)}
    if wrong == options["A"]:
        wrong += "x"
    with pytest.raises(SchemaError):
        validate_row(make_row(options=json.dumps(options), answer_label="A", answer=wrong))
