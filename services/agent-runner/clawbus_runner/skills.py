"""Skills in the runner: reading SKILL.md, and the `skill` tool that loads one on demand.

A SKILL.md is a YAML-style frontmatter block and a Markdown body:

    ---
    name: weather
    description: Current weather and forecasts for a place.
    metadata: {"openclaw": {"emoji": "🌤"}}
    ---
    # Weather
    ...

The frontmatter is read without a YAML library (none is installed): `key: value` lines,
single- or double-quoted values, `|` and `>` block values, and indented continuation lines
(so a multi-line `metadata` JSON object survives as text). `name` and `description` are
required; every other key is kept, as text, in `ParsedSkill.metadata`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from clawbus_core.bootstrap import SKILL_TOOL, truncate_file
from clawbus_core.store.skills import (
    check_description,
    check_skill_name,
    check_skill_text,
    get_skill,
    list_skills,
)
from clawbus_protocol.errors import ClawbusError, InvalidRequest

from clawbus_runner.tools.base import MAX_RESULT_CHARS, ToolContext, ToolError, ToolSpec

_FENCE = "---"
_KEY = re.compile(r"([A-Za-z0-9_][A-Za-z0-9_.-]*)\s*:(?:\s+(.*))?$")
_BLOCK = re.compile(r"[|>][+-]?")


@dataclass(frozen=True)
class ParsedSkill:
    name: str
    description: str
    body: str
    metadata: Mapping[str, str] = field(default_factory=dict)  # the other frontmatter keys


def _unquote(value: str, line_no: int) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        try:
            text: str = json.loads(value)  # YAML's double-quoted escapes are JSON's
        except json.JSONDecodeError:
            return value[1:-1]
        return text
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1].replace("''", "'")
    if value[:1] in ('"', "'"):
        raise InvalidRequest(f"SKILL.md line {line_no}: unterminated quoted value", param="skill")
    return value


def _frontmatter(lines: list[str], first_line: int) -> dict[str, str]:
    values: dict[str, str] = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        line_no = first_line + i
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _KEY.match(line)
        if match is None or line[:1].isspace():
            raise InvalidRequest(
                f"SKILL.md line {line_no}: expected 'key: value' in the frontmatter",
                param="skill",
            )
        key, raw = match.group(1), (match.group(2) or "").strip()
        if key in values:
            raise InvalidRequest(f"SKILL.md line {line_no}: {key!r} is given twice", param="skill")
        # Indented lines that follow belong to this key.
        block: list[str] = []
        while i < len(lines) and (not lines[i].strip() or lines[i][:1].isspace()):
            block.append(lines[i])
            i += 1
        while block and not block[-1].strip():
            block.pop()
        indent = min((len(b) - len(b.lstrip()) for b in block if b.strip()), default=0)
        inner = [b[indent:] for b in block]
        if _BLOCK.fullmatch(raw):
            joined = "\n".join(inner) if raw[0] == "|" else " ".join(b.strip() for b in inner)
            values[key] = joined.strip() if raw.endswith("-") else joined
        elif not raw:
            values[key] = "\n".join(inner).strip()  # a nested block: kept as text
        else:
            values[key] = " ".join([_unquote(raw, line_no), *(b.strip() for b in inner)]).strip()
    return values


def parse_skill_md(text: str) -> ParsedSkill:
    """Read a SKILL.md; InvalidRequest (PayloadTooLarge for size) saying what is wrong."""
    check_skill_text(text, "SKILL.md")
    lines = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if not lines or lines[0].rstrip() != _FENCE:
        raise InvalidRequest(
            "SKILL.md must start with a '---' frontmatter block giving name and description",
            param="skill",
        )
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].rstrip() == _FENCE)
    except StopIteration:
        raise InvalidRequest(
            "SKILL.md frontmatter is not closed with a '---' line", param="skill"
        ) from None
    values = _frontmatter(lines[1:end], first_line=2)
    name = values.pop("name", "").strip()
    if not name:
        raise InvalidRequest("SKILL.md frontmatter has no 'name'", param="name")
    check_skill_name(name)
    description = check_description(values.pop("description", ""))
    body = "\n".join(lines[end + 1 :]).strip("\n")
    return ParsedSkill(name=name, description=description, body=body, metadata=values)


class SkillTool:
    """`skill`: load a skill's instructions, or one of its extra files, by name."""

    spec = ToolSpec(
        name=SKILL_TOOL,
        description=(
            "Load the instructions (SKILL.md) of one of the skills listed in the system prompt "
            "under <available_skills>, or one of the extra files the skill refers to."
        ),
        parameters={
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": "The skill's name, as listed."},
                "file": {
                    "type": "string",
                    "description": "An extra file of the skill, by its relative path. "
                    "Omit to load the skill's instructions.",
                },
            },
            "required": ["name"],
            "additionalProperties": False,
        },
        policy="safe",
    )

    async def run(self, ctx: ToolContext, args: dict[str, Any]) -> str:
        name = args.get("name")
        file = args.get("file")
        if not isinstance(name, str) or not name.strip():
            raise ToolError('give the skill\'s name, e.g. {"name": "weather"}')
        if file is not None and (not isinstance(file, str) or not file.strip()):
            raise ToolError("'file' must be a relative path, e.g. \"reference/api.md\"")
        name = name.strip().lower()
        try:
            skill = await get_skill(ctx.pool, ctx.tenant_id, ctx.agent_id, name, file=file)
        except ClawbusError as err:  # a malformed file path
            raise ToolError(err.info.message) from err
        if skill is None:
            available = [s.name for s in await list_skills(ctx.pool, ctx.tenant_id, ctx.agent_id)]
            listed = ", ".join(available) if available else "none"
            raise ToolError(f"no skill named {name!r} is available; available skills: {listed}")
        if file is not None:
            if not skill.files:
                listed = ", ".join(skill.file_names) if skill.file_names else "none"
                raise ToolError(f"skill {name!r} has no file {file!r}; its files: {listed}")
            path, content = next(iter(skill.files.items()))
            return truncate_file(
                f"{name}/{path}", content, MAX_RESULT_CHARS, hint="the middle is not shown"
            )
        text = skill.body
        if skill.file_names:
            text += (
                f"\n\n[Files of this skill (load one with {SKILL_TOOL} "
                f'{{"name": "{name}", "file": "<path>"}}): {", ".join(skill.file_names)}]'
            )
        return truncate_file(
            f"skill {name}", text, MAX_RESULT_CHARS, hint="the middle is not shown"
        )
