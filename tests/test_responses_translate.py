"""minetune.responses_api's tool and format translation, checked against the openai SDK's own types."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam
from openai.types.responses import ResponseOutputItem
from pydantic import TypeAdapter

from minetune.responses_api import (
    ResponsesError,
    chat_response_format,
    chat_tool_choice,
    chat_tools,
    output_items,
    tool_messages,
)

WEATHER = {
    "type": "function",
    "name": "weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}


def test_function_tools_and_tool_choice_become_chat_tools() -> None:
    [tool] = chat_tools([WEATHER])
    TypeAdapter(ChatCompletionToolParam).validate_python(tool)
    assert tool == {"type": "function", "function": {k: v for k, v in WEATHER.items() if k != "type"}}
    assert chat_tool_choice("required") == "required"
    assert chat_tool_choice({"type": "function", "name": "weather"}) == {
        "type": "function",
        "function": {"name": "weather"},
    }
    with pytest.raises(ResponsesError, match="web_search"):
        chat_tools([{"type": "web_search"}])
    with pytest.raises(ResponsesError, match="tool_choice"):
        chat_tool_choice({"type": "file_search"})


def test_a_tool_round_trip_in_input_items_becomes_chat_messages() -> None:
    items: list[dict[str, Any]] = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call", "call_id": "c2", "name": "weather", "arguments": '{"city":"Rome"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "rain"}]},
    ]
    messages = tool_messages(items)
    for message in messages:
        TypeAdapter(ChatCompletionMessageParam).validate_python(message)
    assert messages == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "c2",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "rain"},
    ]


def test_an_answer_with_tool_calls_becomes_output_items_the_sdk_parses() -> None:
    message = {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [
            {"id": "call_9", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
        ],
    }
    items = [TypeAdapter(ResponseOutputItem).validate_python(i) for i in output_items("mt-7", message)]
    assert [i.type for i in items] == ["message", "function_call"]
    call = items[1]
    assert call.type == "function_call"
    assert (call.call_id, call.name, call.arguments, call.id) == ("call_9", "weather", "{}", "fc_mt-7_0")
    assert output_items("mt-7", {"role": "assistant", "content": None, "tool_calls": []}) == []


def test_text_formats_become_response_formats() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    assert chat_response_format({"format": {"type": "text"}}) is None
    assert chat_response_format({"format": {"type": "json_object"}}) == {"type": "json_object"}
    fmt = {"type": "json_schema", "name": "count", "schema": schema, "strict": True}
    assert chat_response_format({"format": fmt}) == {
        "type": "json_schema",
        "json_schema": {"name": "count", "schema": schema, "strict": True},
    }
    with pytest.raises(ResponsesError, match="json_schema"):
        chat_response_format({"format": {"type": "json_schema"}})
