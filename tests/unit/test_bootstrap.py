"""System prompt assembly: file order, per-file and total caps with visible markers, skills."""

from __future__ import annotations

import random

from clawbus_core.bootstrap import (
    BOOTSTRAP_FILES,
    DEFAULT_FILES,
    MIN_FILE_BUDGET_CHARS,
    SKILL_TOOL,
    SkillSummary,
    assemble_system_prompt,
    truncate_file,
)


def _numbered(n: int) -> str:
    """Text whose every slice is recognisable: 'L00000 L00001 ...'."""
    return " ".join(f"L{i:05d}" for i in range(n))


def test_defaults_cover_every_bootstrap_file() -> None:
    assert BOOTSTRAP_FILES == (
        "AGENTS.md",
        "SOUL.md",
        "TOOLS.md",
        "IDENTITY.md",
        "USER.md",
        "MEMORY.md",
    )
    assert set(DEFAULT_FILES) == set(BOOTSTRAP_FILES)
    for name, text in DEFAULT_FILES.items():
        assert text.startswith(f"# {name}")
        assert 50 < len(text) < 2_000


def test_files_are_injected_in_bootstrap_order_under_headings() -> None:
    files = {name: f"content of {name}" for name in reversed(BOOTSTRAP_FILES)}
    files["HEARTBEAT.md"] = "beat"
    files["EMPTY.md"] = "  \n"
    prompt = assemble_system_prompt("You are Ops.", files, [], [])
    assert prompt.startswith("You are Ops.\n\n")
    assert "# Project Context" in prompt
    positions = [prompt.index(f"## {name}\n\ncontent of {name}") for name in BOOTSTRAP_FILES]
    assert positions == sorted(positions)
    assert prompt.index("## HEARTBEAT.md") > positions[-1]  # others follow, by name
    assert "EMPTY.md" not in prompt  # empty files are skipped


def test_a_file_over_its_cap_keeps_head_and_tail_with_a_marker() -> None:
    text = _numbered(5_000)  # 35k chars
    out = truncate_file("MEMORY.md", text, 10_000)
    assert len(out) <= 10_000
    assert out.startswith(text[:6_900])
    assert out.endswith(text[-1_900:])
    assert "[...truncated MEMORY.md: kept 7000+2000 of 34999 chars" in out
    # Inside the prompt, with the caps given.
    prompt = assemble_system_prompt("", {"MEMORY.md": text}, [], [], per_file_chars=10_000)
    assert "[...truncated MEMORY.md" in prompt
    assert text[:7_000] in prompt
    assert text[-2_000:] in prompt
    assert text[8_000:9_000] not in prompt


def test_a_file_within_its_cap_is_untouched() -> None:
    text = _numbered(100)
    assert truncate_file("SOUL.md", text + "\n\n", 10_000) == text
    assert truncate_file("SOUL.md", text, len(text)) == text


def test_tiny_caps_never_overflow() -> None:
    text = _numbered(1_000)
    for cap in (1, 10, 50, 100, 150, 200, 500):
        assert len(truncate_file("AGENTS.md", text, cap)) <= cap


def _sections(prompt: str) -> dict[str, str]:
    """The injected content of each file, by name."""
    context = prompt.split("# Project Context", 1)[1].split("\n\n[Omitted", 1)[0]
    out = {}
    for chunk in context.split("\n## ")[1:]:
        name, _, body = chunk.partition("\n\n")
        out[name] = body.rstrip("\n")
    return out


def test_the_total_cap_cuts_later_files_and_names_the_omitted_ones() -> None:
    files = {name: _numbered(1_500) for name in BOOTSTRAP_FILES}  # 10.5k chars each
    prompt = assemble_system_prompt("", files, [], [], per_file_chars=10_000, total_chars=20_000)
    sections = _sections(prompt)
    # AGENTS.md and SOUL.md at their own cap; TOOLS.md cut to what the total leaves; then
    # less than the minimum is left, and the rest are named as omitted.
    assert list(sections) == ["AGENTS.md", "SOUL.md", "TOOLS.md"]
    assert all("[...truncated" in body for body in sections.values())
    assert all(len(body) <= 10_000 for body in sections.values())
    assert len(sections["TOOLS.md"]) < 2_000
    assert sum(len(body) for body in sections.values()) <= 20_000
    assert prompt.endswith(
        "[Omitted to fit the context limit: IDENTITY.md, USER.md, MEMORY.md; read them if needed.]"
    )


def test_small_files_fit_the_total_whole() -> None:
    files = {name: f"short {name}" for name in BOOTSTRAP_FILES}
    sections = _sections(
        assemble_system_prompt("", files, [], [], total_chars=MIN_FILE_BUDGET_CHARS)
    )
    assert sections == {name: f"short {name}" for name in BOOTSTRAP_FILES}


def test_skills_are_listed_with_how_to_load_them() -> None:
    skills = [
        SkillSummary("weather", "Forecasts   for a place."),
        SkillSummary("github", "Work with <issues> & PRs."),
    ]
    prompt = assemble_system_prompt("base", {"SOUL.md": "soul"}, skills, ["read", SKILL_TOOL])
    assert "## Skills (mandatory)" in prompt
    assert "`skill` tool" in prompt
    assert '"file": "<path>"' in prompt
    assert "<name>github</name>" in prompt
    assert "<description>Work with &lt;issues&gt; &amp; PRs.</description>" in prompt
    assert "<description>Forecasts for a place.</description>" in prompt
    assert prompt.index("<name>github</name>") < prompt.index("<name>weather</name>")
    assert "Tools available to you: read, skill." in prompt
    # Order of sections: base, tooling, skills, then the files.
    assert prompt.index("base") < prompt.index("## Tooling") < prompt.index("## Skills")
    assert prompt.index("## Skills") < prompt.index("# Project Context")


def test_skills_are_not_listed_without_the_skill_tool() -> None:
    skills = [SkillSummary("weather", "Forecasts.")]
    prompt = assemble_system_prompt("base", {}, skills, ["read"])
    assert "available_skills" not in prompt
    assert assemble_system_prompt("base", {}, [], [SKILL_TOOL]).count("Skills") == 0


def test_output_is_deterministic() -> None:
    files = {name: f"text {name}" for name in BOOTSTRAP_FILES}
    skills = [SkillSummary(f"s{i}", f"skill {i}") for i in range(10)]
    tools = ["read", "write", SKILL_TOOL]
    expected = assemble_system_prompt("base", files, skills, tools)
    rng = random.Random(7)
    for _ in range(5):
        items = list(files.items())
        rng.shuffle(items)
        shuffled_skills = skills[:]
        rng.shuffle(shuffled_skills)
        shuffled_tools = tools[:]
        rng.shuffle(shuffled_tools)
        assert assemble_system_prompt("base", dict(items), shuffled_skills, shuffled_tools) == (
            expected
        )


def test_nothing_to_inject() -> None:
    assert assemble_system_prompt("  base  ", {}, [], []) == "base"
    assert assemble_system_prompt("", {}, [], []) == ""
