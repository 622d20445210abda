"""SKILL.md parsing: frontmatter forms, and a clear refusal for each kind of bad skill."""

from __future__ import annotations

import json

import pytest
from clawbus_core.store.skills import MAX_SKILL_BYTES
from clawbus_protocol.errors import ClawbusError, InvalidRequest, PayloadTooLarge
from clawbus_runner.skills import SkillTool, parse_skill_md
from clawbus_runner.tools.base import ToolPolicy

WEATHER = """\
---
name: weather
description: Current weather and forecasts for any place.
homepage: https://wttr.in
---
# Weather

Use `curl wttr.in/<place>`.
"""


def test_a_plain_skill() -> None:
    skill = parse_skill_md(WEATHER)
    assert skill.name == "weather"
    assert skill.description == "Current weather and forecasts for any place."
    assert skill.body == "# Weather\n\nUse `curl wttr.in/<place>`."
    assert skill.metadata == {"homepage": "https://wttr.in"}


def test_quoted_block_and_nested_values() -> None:
    text = (
        "\ufeff---\r\n"
        'name: "gh-issues"\r\n'
        "description: >\r\n"
        "  Triage GitHub issues:\r\n"
        "  label, dedupe and reply.\r\n"
        "notes: |\r\n"
        "  line one\r\n"
        "  line two\r\n"
        "quoted: 'it''s fine'\r\n"
        'escaped: "tab\\there"\r\n'
        "# a comment\r\n"
        "metadata:\r\n"
        "  {\r\n"
        '    "openclaw": {"emoji": "🐙", "requires": {"bins": ["gh"]}}\r\n'
        "  }\r\n"
        "user-invocable: true\r\n"
        "---\r\n"
        "\r\n"
        "Body.\r\n"
    )
    skill = parse_skill_md(text)
    assert skill.name == "gh-issues"
    assert skill.description == "Triage GitHub issues: label, dedupe and reply."
    assert skill.metadata["notes"] == "line one\nline two"
    assert skill.metadata["quoted"] == "it's fine"
    assert skill.metadata["escaped"] == "tab\there"
    assert skill.metadata["user-invocable"] == "true"
    assert json.loads(skill.metadata["metadata"])["openclaw"]["requires"] == {"bins": ["gh"]}
    assert skill.body == "Body."


def test_multi_line_plain_description_is_folded() -> None:
    text = "---\nname: x\ndescription: first part\n  second part\n---\nbody"
    assert parse_skill_md(text).description == "first part second part"


def test_an_empty_body_is_allowed() -> None:
    assert parse_skill_md("---\nname: x\ndescription: d\n---").body == ""


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("# Weather\nno frontmatter", "must start with a '---'"),
        ("---\nname: x\ndescription: d\n", "not closed"),
        ("---\ndescription: d\n---\nbody", "no 'name'"),
        ("---\nname: x\n---\nbody", "description"),
        ("---\nname: x\ndescription: '  '\n---\nbody", "description"),
        ("---\nname: Weather\ndescription: d\n---\n", "invalid skill name"),
        ("---\nname: ../etc\ndescription: d\n---\n", "invalid skill name"),
        ("---\nname: my skill\ndescription: d\n---\n", "invalid skill name"),
        ("---\nname: " + "a" * 65 + "\ndescription: d\n---\n", "invalid skill name"),
        ("---\nname: x\nname: y\ndescription: d\n---\n", "given twice"),
        ("---\nname: x\ndescription: d\njust words\n---\n", "line 4"),
        ("---\nname: 'x\ndescription: d\n---\n", "unterminated"),
        ("---\nname: x\ndescription: " + "d" * 2000 + "\n---\n", "longer than"),
    ],
)
def test_bad_skills_are_refused_clearly(text: str, says: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_skill_md(text)
    assert says in err.value.info.message
    assert err.value.info.http_status == 400


def test_an_oversized_skill_is_refused() -> None:
    body = "x" * (MAX_SKILL_BYTES + 1)
    with pytest.raises(PayloadTooLarge) as err:
        parse_skill_md(f"---\nname: big\ndescription: d\n---\n{body}")
    assert isinstance(err.value, ClawbusError)
    assert err.value.info.http_status == 413


def test_the_skill_tool_is_safe_and_takes_a_name() -> None:
    spec = SkillTool.spec
    assert spec.name == "skill"
    assert spec.policy == "safe"
    assert spec.parameters["required"] == ["name"]
    assert set(spec.parameters["properties"]) == {"name", "file"}
    assert ToolPolicy().permits(spec)
