"""Replies split to chat apps' limits on sensible boundaries, and Markdown as safe Telegram HTML."""

from __future__ import annotations

import html
import re

import pytest
from clawbus_bridge.format import DISCORD_LIMIT, TELEGRAM_LIMIT, split, telegram_html


@pytest.mark.parametrize("limit", [TELEGRAM_LIMIT, DISCORD_LIMIT, 100])
def test_chunks_fit_and_lose_nothing_but_break_whitespace(limit: int) -> None:
    words = [f"word{i}" for i in range(3000)]
    text = (
        " ".join(words[:700]) + ".\n\n" + " ".join(words[700:1400]) + "\n" + " ".join(words[1400:])
    )
    chunks = split(text, limit)
    assert all(0 < len(c) <= limit for c in chunks)
    assert re.sub(r"\s+", " ", " ".join(chunks)) == re.sub(r"\s+", " ", text)


def test_nine_thousand_characters_are_three_telegram_messages() -> None:
    text = "\n\n".join("x" * 2999 for _ in range(3))  # 9 001 characters
    chunks = split(text, TELEGRAM_LIMIT)
    assert len(chunks) == 3
    assert chunks == ["x" * 2999] * 3


def test_paragraphs_break_before_lines_and_sentences() -> None:
    first = "First paragraph. " * 20
    second = "Second one. " * 20
    chunks = split(f"{first.strip()}\n\n{second.strip()}", 400)
    assert chunks[0] == first.strip()
    assert chunks[1] == second.strip()


def test_a_word_longer_than_the_limit_is_cut() -> None:
    assert split("a" * 250, 100) == ["a" * 92, "a" * 92, "a" * 66]


def test_a_split_code_block_is_closed_and_reopened() -> None:
    code = "\n".join(f"line {i} = {i}" for i in range(60))
    chunks = split(f"Here:\n```python\n{code}\n```\nDone.", 300)
    assert len(chunks) > 2
    for chunk in chunks:
        assert chunk.count("```") % 2 == 0, chunk
        assert len(chunk) <= 300
    assert chunks[1].startswith("```python\n")


def test_empty_text_is_no_chunk() -> None:
    assert split("  \n ", 100) == []


def test_markdown_becomes_telegram_html() -> None:
    rendered = telegram_html(
        "# Title\n**bold** and *italic* and _also_ and ~~gone~~, `x < y`, "
        "[docs](https://example.com/a?b=1&c=2)\n```py\nif a < b:\n    pass\n```"
    )
    assert rendered == (
        "<b>Title</b>\n<b>bold</b> and <i>italic</i> and <i>also</i> and <s>gone</s>, "
        '<code>x &lt; y</code>, <a href="https://example.com/a?b=1&amp;c=2">docs</a>\n'
        '<pre><code class="language-py">if a &lt; b:\n    pass</code></pre>'
    )


@pytest.mark.parametrize(
    "text",
    [
        "<script>alert(1)</script>",
        "a < b && c > d",
        "<b>not really bold",
        "[x](javascript:alert(1))",
        "snake_case_names and 2*3*4",
        "\"quotes\" & 'apostrophes'",
    ],
)
def test_text_the_agent_writes_cannot_inject_markup(text: str) -> None:
    rendered = telegram_html(text)
    # Every tag in the output is one of ours, and the visible text is the input's.
    assert set(re.findall(r"</?([a-z]+)", rendered)) <= {"b", "i", "s", "code", "pre", "a"}
    assert "<script" not in rendered and "javascript:" not in rendered.split('href="')[-1][:11]
    visible = html.unescape(re.sub(r"<[^>]+>", "", rendered))
    assert visible.replace("*", "").replace("_", "") == text.replace("*", "").replace("_", "")
