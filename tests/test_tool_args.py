"""Tool arguments as the model sends them: parsed into the tool's model, or explained to the
model in an error it can act on."""

from __future__ import annotations

import json

import pytest

from tests.support.tools import DrawArgs, Point, draw, ping
from voicestack.agent.tools import Tool, ToolArgsError, parse_tool_args


def args_error(target: Tool, arguments: str) -> str:
    with pytest.raises(ToolArgsError) as caught:
        parse_tool_args(target, arguments)
    assert str(caught.value) == caught.value.message
    return caught.value.message


EXPECTED_DRAW = "Expected arguments: label (string, required), points (array of object, required)."


def test_valid_arguments_become_the_model() -> None:
    args = parse_tool_args(draw, '{"label": "L", "points": [{"x": 1}, {"x": 2, "y": 3}]}')
    assert args == DrawArgs(label="L", points=[Point(x=1), Point(x=2, y=3)])


def test_invalid_json_is_explained() -> None:
    assert args_error(draw, '{"label": "L",') == (
        "The arguments for tool 'draw' are not valid JSON (Expecting property name enclosed in "
        f"double quotes at line 1 column 15). Send one JSON object. {EXPECTED_DRAW}"
    )


@pytest.mark.parametrize(
    ("arguments", "kind"),
    [("[1, 2]", "an array"), ('"hi"', "a string"), ("3.5", "a number"), ("null", "null")],
)
def test_json_that_is_not_an_object_is_explained(arguments: str, kind: str) -> None:
    assert args_error(draw, arguments) == (
        f"The arguments for tool 'draw' must be a JSON object, not {kind}. {EXPECTED_DRAW}"
    )


def test_validation_errors_are_listed_field_by_field() -> None:
    arguments = json.dumps({"label": "", "points": [{"x": 1}, {"x": "far", "y": None}]})
    assert args_error(draw, arguments) == (
        "Invalid arguments for tool 'draw':\n"
        '- label: String should have at least 1 character (got "")\n'
        "- points[1].x: Input should be a valid integer, unable to parse string as an integer "
        '(got "far")\n'
        "- points[1].y: Input should be a valid integer (got null)\n"
        f"{EXPECTED_DRAW}"
    )
    assert args_error(draw, "{}") == (
        "Invalid arguments for tool 'draw':\n"
        "- label: Field required\n"
        "- points: Field required\n"
        f"{EXPECTED_DRAW}"
    )


def test_unexpected_arguments_to_a_tool_without_args() -> None:
    assert args_error(ping, '{"loud": true}') == (
        "Invalid arguments for tool 'ping-pong':\n"
        "- loud: Extra inputs are not permitted\n"
        "Expected arguments: no arguments: send {}."
    )


def test_long_bad_values_are_shortened() -> None:
    message = args_error(draw, json.dumps({"label": "L", "points": "x" * 500}))
    assert message.splitlines()[1] == (
        '- points: Input should be a valid list (got "' + "x" * 78 + "…)"
    )
