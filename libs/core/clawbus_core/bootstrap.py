"""Workspace bootstrap files and the system prompt built from them (pure: no I/O).

A new agent's workspace is seeded with the files OpenClaw seeds (AGENTS.md, SOUL.md, ...);
each run injects them into the system prompt under "# Project Context", in
`BOOTSTRAP_FILES` order, after the agent's own prompt, its tool names and the list of the
skills it may load. As in OpenClaw, a file over its cap keeps its head (70%) and tail (20%)
around a visible marker, and the files together stop at a total cap; a file that no longer
fits is named as omitted rather than silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from xml.sax.saxutils import escape

PER_FILE_CHARS = 20_000
TOTAL_CHARS = 60_000
HEAD_RATIO = 0.7
TAIL_RATIO = 0.2
# With less of the total left than this, a file that does not fit is omitted, not cut to a stub.
MIN_FILE_BUDGET_CHARS = 256

SKILL_TOOL = "skill"

# OpenClaw's injection order (loadWorkspaceBootstrapFiles), for the files clawbus seeds.
BOOTSTRAP_FILES: tuple[str, ...] = (
    "AGENTS.md",
    "SOUL.md",
    "TOOLS.md",
    "IDENTITY.md",
    "USER.md",
    "MEMORY.md",
)

_AGENTS_MD = """\
# AGENTS.md - How you work

This workspace is your home. Its files are stored for you and loaded into every session.

## Every session
- SOUL.md is who you are; USER.md is who you are helping; IDENTITY.md is how you present.
- MEMORY.md holds what you decided to remember. Read `memory/` notes when they matter.

## Memory
- You wake up fresh each session: files are your continuity.
- When something is worth keeping (a decision, a preference, a lesson), write it down.
  Keep MEMORY.md short and curated; put raw daily notes in `memory/YYYY-MM-DD.md`.

## Safety
- Do not exfiltrate private data. Do not run destructive actions without asking.
- When unsure whether an action is wanted, ask first.
"""

_SOUL_MD = """\
# SOUL.md - Who you are

- Be genuinely helpful, not performatively helpful: skip filler, do the work.
- Have a point of view. Say when you disagree, and why.
- Be resourceful before asking: read the files, check the context, then ask if needed.
- Earn trust through competence. Be careful with anything that leaves this conversation.
- Private things stay private.

This file is yours to evolve. When you change it, tell the user.
"""

_TOOLS_MD = """\
# TOOLS.md - Local notes

Skills and tools define how things work; this file is for your specifics: names of
devices, hosts, accounts, preferred voices, conventions. Add what you learn.
"""

_IDENTITY_MD = """\
# IDENTITY.md - Who am I?

- Name:
- Role:
- Vibe:
- Emoji:

Fill this in with the user during your first conversations.
"""

_USER_MD = """\
# USER.md - About the user

- Name:
- What to call them:
- Timezone:
- Notes:

Learn about the person you are helping and keep this up to date.
"""

_MEMORY_MD = """\
# MEMORY.md - Long-term memory

Curated things worth remembering across sessions: decisions, preferences, lessons.
Keep it short; move details to `memory/` notes.
"""

DEFAULT_FILES: Mapping[str, str] = MappingProxyType(
    {
        "AGENTS.md": _AGENTS_MD,
        "SOUL.md": _SOUL_MD,
        "TOOLS.md": _TOOLS_MD,
        "IDENTITY.md": _IDENTITY_MD,
        "USER.md": _USER_MD,
        "MEMORY.md": _MEMORY_MD,
    }
)


@dataclass(frozen=True)
class SkillSummary:
    """What the prompt lists of a skill; the body is loaded on demand with the skill tool."""

    name: str
    description: str


def truncate_file(
    name: str, content: str, cap: int, *, hint: str = "read the file for the full content"
) -> str:
    """`content` (trailing whitespace removed) within `cap` characters.

    Over the cap: ~70% of it from the head and ~20% from the tail around a marker that says
    what was cut (and `hint`); the result never exceeds `cap`.
    """
    text = content.rstrip()
    if len(text) <= cap:
        return text
    head = int(cap * HEAD_RATIO)
    tail = int(cap * TAIL_RATIO)
    marker = _marker(name, head, tail, len(text), hint)
    room = cap - len(marker)
    if room < head + tail:  # a small cap: share what the marker leaves, 7:2
        head = max(room, 0) * 7 // 9
        tail = max(room - head, 0)
        marker = _marker(name, head, tail, len(text), hint)
    if len(marker) > cap:  # not even the marker fits: a bare head
        return text[:cap]
    return text[:head] + marker + (text[-tail:] if tail else "")


def _marker(name: str, head: int, tail: int, total: int, hint: str) -> str:
    return f"\n\n[...truncated {name}: kept {head}+{tail} of {total} chars; {hint}...]\n\n"


def _ordered(files: Mapping[str, str]) -> list[tuple[str, str]]:
    known = [(n, files[n]) for n in BOOTSTRAP_FILES if n in files]
    extra = sorted((n, c) for n, c in files.items() if n not in BOOTSTRAP_FILES)
    return known + extra


def _project_context(files: Mapping[str, str], per_file_chars: int, total_chars: int) -> str:
    remaining = total_chars
    sections: list[str] = []
    omitted: list[str] = []
    for name, content in _ordered(files):
        if not content.strip():
            continue  # an empty file says nothing; OpenClaw skips it too
        cap = min(per_file_chars, remaining)
        if len(content.rstrip()) > cap and remaining < MIN_FILE_BUDGET_CHARS:
            omitted.append(name)  # too little room left to show anything useful of it
            continue
        text = truncate_file(name, content, cap)
        remaining -= len(text)
        sections.append(f"## {name}\n\n{text}")
    if not sections:
        return ""
    lines = [
        "# Project Context",
        "",
        "The following workspace files have been loaded.",
        "If SOUL.md is present, embody its persona and tone.",
        "",
        "\n\n".join(sections),
    ]
    if omitted:
        lines += [
            "",
            f"[Omitted to fit the context limit: {', '.join(omitted)}; read them if needed.]",
        ]
    return "\n".join(lines)


def _skills_section(skills: Sequence[SkillSummary]) -> str:
    entries = "\n".join(
        "  <skill>\n"
        f"    <name>{escape(s.name)}</name>\n"
        f"    <description>{escape(' '.join(s.description.split()))}</description>\n"
        "  </skill>"
        for s in sorted(skills, key=lambda s: s.name)
    )
    return "\n".join(
        [
            "## Skills (mandatory)",
            "Before replying: scan <available_skills> <description> entries.",
            f"- If exactly one skill clearly applies: load it with the `{SKILL_TOOL}` tool "
            f'({{"name": "<name>"}}), then follow it.',
            "- If multiple could apply: choose the most specific one, then load and follow it.",
            "- If none clearly apply: do not load any skill.",
            f"- A skill may refer to its own extra files: load one with `{SKILL_TOOL}` "
            f'({{"name": "<name>", "file": "<path>"}}).',
            "Constraints: never load more than one skill up front; only load after selecting.",
            "",
            "<available_skills>",
            entries,
            "</available_skills>",
        ]
    )


def assemble_system_prompt(
    base_prompt: str,
    files: Mapping[str, str],
    skills: Sequence[SkillSummary],
    tools: Sequence[str],
    *,
    per_file_chars: int = PER_FILE_CHARS,
    total_chars: int = TOTAL_CHARS,
) -> str:
    """The system prompt for one run: the agent's prompt, its tools, its skills, its files.

    `tools` are the tool names the run is offered. Skills are listed only when the `skill`
    tool is among them (a model that cannot load a skill gains nothing from the list).
    The same inputs always give the same text, whatever the order of `files` and `skills`.
    """
    parts: list[str] = []
    if base_prompt.strip():
        parts.append(base_prompt.strip())
    if tools:
        parts.append("## Tooling\nTools available to you: " + ", ".join(sorted(set(tools))) + ".")
    if skills and SKILL_TOOL in tools:
        parts.append(_skills_section(skills))
    context = _project_context(files, per_file_chars, total_chars)
    if context:
        parts.append(context)
    return "\n\n".join(parts)
