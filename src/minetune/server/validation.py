"""Validated input types shared by the server's routes, so hostile input is a 4xx, never a 500.

- Ids: every record id or version number is 1 .. :data:`MAX_ID` (the database's integer range;
  larger ids cannot exist, SQLite cannot bind ids of 2**63 and more, PostgreSQL ids are 32-bit).
- Text: a string from a request must be encodable as UTF-8 (no lone surrogates such as a JSON
  ``"\\ud800"``) and hold no NUL (PostgreSQL cannot store one). :data:`FormText` and the program
  name types check one parameter; :class:`InputModel` checks every string anywhere in a JSON
  body, keys and ignored extras too. A JSON ``"\\ud83d\\ude00"`` (a pair) is one character, and fine.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Form, Path, Query
from pydantic import AfterValidator, BaseModel, Field, model_validator
from pydantic_core import PydanticCustomError

MAX_ID = 2**31 - 1
MAX_PROGRAM_NAME = 200

_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text (a lone surrogate or a NUL), or None when it can."""
    bad = _BAD_TEXT.search(value)
    if bad is None:
        return None
    char = bad.group()
    what = "a NUL character" if char == "\x00" else f"a lone surrogate (U+{ord(char):04X}), not valid Unicode"
    return f"the text holds {what} at position {bad.start()}"


def check_text(value: str) -> str:
    """``value`` unchanged if it can be stored as text, else a validation error (422)."""
    problem = text_problem(value)
    if problem is not None:
        raise PydanticCustomError("invalid_text", problem)
    return value


def _first_bad_string(value: Any, where: str) -> str | None:
    """The first string in decoded JSON ``value`` that cannot be stored, as 'where: why'."""
    stack = [(value, where)]
    while stack:
        item, at = stack.pop()
        if isinstance(item, str):
            if (problem := text_problem(item)) is not None:
                return f"{at}: {problem}" if at else problem
        elif isinstance(item, dict):
            for key, child in item.items():
                path = f"{at}.{key}" if at else str(key)
                if isinstance(key, str) and (problem := text_problem(key)) is not None:
                    return f"a key in {at or 'the body'}: {problem}"
                stack.append((child, path))
        elif isinstance(item, list | tuple):
            stack.extend((child, f"{at}.{i}" if at else str(i)) for i, child in enumerate(item))
    return None


class InputModel(BaseModel):
    """A request body model whose every string (nested, keys and extras included) is checked as
    :func:`check_text` does, before the fields are validated."""

    @model_validator(mode="before")
    @classmethod
    def _storable_text(cls, data: Any) -> Any:
        problem = _first_bad_string(data, "")
        if problem is not None:
            raise PydanticCustomError("invalid_text", problem)
        return data


FormText = Annotated[str, AfterValidator(check_text), Form()]
"""A form field that can be stored (see :func:`check_text`)."""

PathId = Annotated[int, Path(ge=1, le=MAX_ID)]
"""A record id or version number in the path."""
QueryId = Annotated[int, Query(ge=1, le=MAX_ID)]
"""A record id or version number in the query string."""
FormId = Annotated[int | None, Form(ge=1, le=MAX_ID)]
"""An optional record id or version number in a form."""
BodyId = Annotated[int, Field(ge=1, le=MAX_ID)]
"""A record id in a JSON body."""

ProgramQuery = Annotated[str, AfterValidator(check_text), Query(max_length=MAX_PROGRAM_NAME)]
ProgramForm = Annotated[str, AfterValidator(check_text), Form(max_length=MAX_PROGRAM_NAME)]


def json_body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting ``model`` as the JSON body of a route that parses its body
    itself (the schema inlined, so the OpenAPI document and schemathesis know the body)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    content = {"application/json": {"schema": inline(schema)}}
    return {"requestBody": {"required": True, "content": content}}
