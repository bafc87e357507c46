"""The unified row schema (docs/protocol.md section 1), standard library only.

Every data set, eval and train, is one table with the columns in :data:`COLUMNS`. ``options`` is a *string*
holding a JSON object whose keys are the letters A, B, C, ... in order; ``answer`` is the text of the correct
option; ``dataset_index`` is the unique row id (resume key and regrading join key).

Image decoding is pluggable: pass ``image_decoder`` (a callable that raises on a bad image) to
:func:`validate_row`; ``medvlthinker.images`` provides one for PIL images and HF image dicts
``{"bytes": ..., "path": ...}``. That keeps this module importable without Pillow.

>>> parse_options('{"A": "Yes", "B": "No"}')
{'A': 'Yes', 'B': 'No'}
>>> validate_row({"question": "Q?", "options": '{"A": "Yes", "B": "No"}', "answer_label": "B",
...               "answer": "No", "dataset_name": "slake_closed", "dataset_index": 3, "images": None})
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from medvlthinker.errors import UserError

COLUMNS: tuple[str, ...] = (
    "images",
    "question",
    "options",
    "answer_label",
    "answer",
    "reasoning",
    "dataset_name",
    "dataset_index",
    "hash",
    "misc",
)
"""All columns of the unified schema, in table order."""

REQUIRED_COLUMNS: tuple[str, ...] = (
    "question",
    "options",
    "answer_label",
    "answer",
    "dataset_name",
    "dataset_index",
)
"""Columns a row must carry. ``images``, ``reasoning``, ``hash`` and ``misc`` may be absent (read as None):
text-only rows have no images and eval rows no reasoning."""

OPTIONAL_COLUMNS: tuple[str, ...] = tuple(c for c in COLUMNS if c not in REQUIRED_COLUMNS)

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class SchemaError(UserError):
    """A row breaks the unified schema. The message names the row, the problem and the fix.

    >>> str(SchemaError("answer_label 'E' is not a key of options", dataset_name="pmc_vqa", dataset_index=7,
    ...                 fix="set answer_label to one of A, B, C, D"))
    "row (dataset_name='pmc_vqa', dataset_index=7): answer_label 'E' is not a key of options; fix: set answer_label to one of A, B, C, D"
    """

    def __init__(
        self,
        problem: str,
        *,
        dataset_name: Any = None,
        dataset_index: Any = None,
        position: int | None = None,
        fix: str | None = None,
    ) -> None:
        self.problem = problem
        self.dataset_name = dataset_name
        self.dataset_index = dataset_index
        self.position = position
        self.fix = fix
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.dataset_name is not None or self.dataset_index is not None:
            where.append(f"dataset_name={self.dataset_name!r}, dataset_index={self.dataset_index!r}")
        if self.position is not None:
            where.append(f"position {self.position}")
        head = f"row ({'; '.join(where)}): " if where else ""
        tail = f"; fix: {self.fix}" if self.fix else ""
        return f"{head}{self.problem}{tail}"

    def for_row(self, row: Mapping[str, Any] | None, position: int | None = None) -> SchemaError:
        """The same error, naming ``row`` (used when a row-less helper such as parse_options raised)."""
        row = row or {}
        return SchemaError(
            self.problem,
            dataset_name=row.get("dataset_name", self.dataset_name),
            dataset_index=row.get("dataset_index", self.dataset_index),
            position=self.position if position is None else position,
            fix=self.fix,
        )


def parse_options(options: str | Mapping[str, Any], *, strict: bool = True) -> dict[str, str]:
    """The options of a row as an ordered ``{letter: text}`` dict.

    ``options`` is the JSON string stored in the table, or an already decoded mapping. With ``strict`` (the
    default) the keys must be exactly A, B, C, ... in order and every text a string. With ``strict=False`` any
    JSON object is accepted in its own key order and non-string texts are turned into strings, which is how the
    original formats whatever it is given (the prompt builder and the graders use this).

    >>> parse_options({"A": "x", "B": "y"})
    {'A': 'x', 'B': 'y'}
    >>> try:
    ...     parse_options('{"B": "y", "A": "x"}')
    ... except SchemaError as exc:
    ...     print(exc)
    options keys must be the letters A, B in order, got ['B', 'A']; fix: re-letter the options A, B, C, ... in question order and update answer_label
    """
    if isinstance(options, Mapping):
        parsed: Any = dict(options)
    elif isinstance(options, (str, bytes, bytearray)):
        try:
            parsed = json.loads(options)
        except ValueError as exc:
            raise SchemaError(
                f"options is not valid JSON ({exc}): {str(options)[:80]!r}",
                fix='store options as a JSON object string, e.g. json.dumps({"A": "Yes", "B": "No"})',
            ) from None
    else:
        raise SchemaError(
            f"options must be a JSON object string or a dict, got {type(options).__name__}",
            fix='store options as a JSON object string, e.g. json.dumps({"A": "Yes", "B": "No"})',
        )
    if not isinstance(parsed, dict):
        raise SchemaError(
            f"options must be a JSON object, got JSON {type(parsed).__name__}",
            fix='store options as a JSON object string, e.g. json.dumps({"A": "Yes", "B": "No"})',
        )
    if not strict:
        return {str(k): v if isinstance(v, str) else str(v) for k, v in parsed.items()}
    keys = list(parsed)
    if not keys:
        raise SchemaError("options is empty", fix="give the question at least one option")
    expected = list(LETTERS[: len(keys)])
    if len(keys) > len(LETTERS) or keys != expected:
        raise SchemaError(
            f"options keys must be the letters {', '.join(expected)} in order, got {keys}",
            fix="re-letter the options A, B, C, ... in question order and update answer_label",
        )
    for key, value in parsed.items():
        if not isinstance(value, str):
            raise SchemaError(
                f"option {key} text must be a string, got {type(value).__name__} {value!r}",
                fix="store every option text as a string",
            )
    return parsed


def _check_images(row: Mapping[str, Any], images: Any, check_images: bool, image_decoder: Callable | None) -> None:
    if images is None:
        return
    if not isinstance(images, list):
        raise SchemaError(
            f"images must be a list of images or None, got {type(images).__name__}",
            fix="store images as a list (HF Sequence(Image)), or None for a text-only row",
        ).for_row(row)
    if not (check_images and image_decoder is not None):
        return
    for pos, image in enumerate(images):
        try:
            image_decoder(image)
        except Exception as exc:  # any decoder failure makes the row invalid
            raise SchemaError(
                f"image {pos} of {len(images)} cannot be decoded ({type(exc).__name__}: {exc})",
                fix="re-encode or replace the image, or drop the row",
            ).for_row(row) from exc


def validate_row(
    row: Mapping[str, Any],
    *,
    check_images: bool = False,
    image_decoder: Callable[[Any], Any] | None = None,
) -> None:
    """Raise :class:`SchemaError` when ``row`` breaks the unified schema; return None otherwise.

    Checks: the required columns are present; options is a JSON object lettered A, B, C, ... with string texts;
    answer_label is a key of options; answer == options[answer_label]; dataset_index is an int; dataset_name
    and question are strings; images is None or a list and, when ``check_images`` and ``image_decoder`` are
    given, every image decodes; reasoning, hash and misc are None or strings.
    """
    if not isinstance(row, Mapping):
        raise SchemaError(f"a row must be a mapping of column -> value, got {type(row).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in row]
    if missing:
        raise SchemaError(
            f"missing column(s) {missing}",
            fix=f"every row needs the columns {list(REQUIRED_COLUMNS)} (docs/protocol.md section 1)",
        ).for_row(row)
    index = row["dataset_index"]
    # bool is an int subclass; a True/False index is always a conversion bug upstream
    if not isinstance(index, int) or isinstance(index, bool):
        raise SchemaError(
            f"dataset_index must be an int, got {type(index).__name__} {index!r}",
            fix="store dataset_index as an integer row id, unique in the table",
        ).for_row(row)
    for column in ("dataset_name", "question", "answer_label", "answer"):
        if not isinstance(row[column], str):
            raise SchemaError(
                f"{column} must be a string, got {type(row[column]).__name__} {row[column]!r}",
                fix=f"store {column} as a string",
            ).for_row(row)
    try:
        options = parse_options(row["options"], strict=True)
    except SchemaError as exc:
        raise exc.for_row(row) from None
    label = row["answer_label"]
    if label not in options:
        raise SchemaError(
            f"answer_label {label!r} is not a key of options {list(options)}",
            fix="set answer_label to the letter of the correct option",
        ).for_row(row)
    if row["answer"] != options[label]:
        raise SchemaError(
            f"answer {row['answer']!r} differs from options[{label!r}] = {options[label]!r}",
            fix="set answer to the exact text of the correct option (or fix answer_label)",
        ).for_row(row)
    for column in ("reasoning", "hash", "misc"):
        value = row.get(column)
        if value is not None and not isinstance(value, str):
            raise SchemaError(
                f"{column} must be a string or None, got {type(value).__name__}",
                fix=f"store {column} as a string (misc: a JSON string) or None",
            ).for_row(row)
    _check_images(row, row.get("images"), check_images, image_decoder)


def validate_rows(rows: Iterable[Mapping[str, Any]], **kw: Any) -> int:
    """Validate every row (keyword arguments go to :func:`validate_row`) and return the number of rows.

    Also rejects a dataset_index that occurs twice, naming both occurrences.
    """
    seen: dict[int, tuple[int, Any]] = {}
    count = 0
    for position, row in enumerate(rows):
        try:
            validate_row(row, **kw)
        except SchemaError as exc:
            raise SchemaError(
                exc.problem,
                dataset_name=exc.dataset_name,
                dataset_index=exc.dataset_index,
                position=position,
                fix=exc.fix,
            ) from exc
        index = row["dataset_index"]
        if index in seen:
            first_position, first_name = seen[index]
            raise SchemaError(
                f"duplicate dataset_index {index}: first at position {first_position} "
                f"(dataset_name={first_name!r}), again at position {position} "
                f"(dataset_name={row['dataset_name']!r})",
                dataset_name=row["dataset_name"],
                dataset_index=index,
                position=position,
                fix="give every row a unique dataset_index (it is the resume and regrading key)",
            )
        seen[index] = (position, row["dataset_name"])
        count += 1
    return count
