"""Agent replies as chat apps take them: split to the platform's limit on sensible boundaries,
and Markdown rendered safely for Telegram (as HTML, every character of the text escaped).

Splitting prefers, within the limit, the last paragraph break, then line break, then sentence
end, then space; only a single word longer than the limit is cut. A split inside a fenced
code block closes the fence in the chunk and reopens it in the next, so each chunk renders.
"""

from __future__ import annotations

import html
import re

TELEGRAM_LIMIT = 4096
DISCORD_LIMIT = 2000

_BREAKS = ("\n\n", "\n", ". ", "! ", "? ", " ")
_FENCE = re.compile(r"^```", re.M)


def _cut(text: str, limit: int) -> int:
    """Where to end the first chunk of `text` (len(text) > limit)."""
    window = text[:limit]
    for mark in _BREAKS:
        at = window.rfind(mark)
        if at >= limit // 4:  # not so early that chunks become tiny
            return at + len(mark)
    return limit


def split(text: str, limit: int) -> list[str]:
    """`text` in chunks of at most `limit` characters, none empty, in order."""
    text = text.strip()
    if not text:
        return []
    reserve = 8  # room to close and reopen a code fence
    chunks: list[str] = []
    fence_open = ""
    while text:
        body = fence_open + text
        if len(body) <= limit:
            chunks.append(body)
            break
        end = _cut(body, limit - reserve)
        chunk, rest = body[:end].rstrip(), body[end:]
        fences = _FENCE.findall(chunk)
        if len(fences) % 2 == 1:  # the chunk ends inside a code block
            opening = chunk[chunk.rfind("```") :].split("\n", 1)[0]
            chunk += "\n```"
            fence_open = opening + "\n"
        else:
            fence_open = ""
        if chunk.strip():
            chunks.append(chunk)
        text = rest.lstrip("\n") if not fence_open else rest
    return [c for c in chunks if c.strip()]


# --- Markdown to Telegram HTML ----------------------------------------------------------------

_CODE_BLOCK = re.compile(r"```([\w+-]*)\n?(.*?)```", re.S)
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^\s)]+)\)")
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|__(?=\S)(.+?)(?<=\S)__", re.S)
_ITALIC = re.compile(
    r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])|(?<!\w)_(?=\S)([^_\n]+?)(?<=\S)_(?!\w)"
)
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*$", re.M)
_SLOT = "\x00{}\x00"


def telegram_html(markdown: str) -> str:
    """The Markdown an agent writes as Telegram's HTML subset. Code is kept verbatim; all
    other text is escaped, so nothing the agent writes can break the markup."""
    slots: list[str] = []

    def keep(fragment: str) -> str:
        slots.append(fragment)
        return _SLOT.format(len(slots) - 1)

    def block(m: re.Match[str]) -> str:
        lang, code = m.group(1), m.group(2)
        attr = f' class="language-{html.escape(lang)}"' if lang else ""
        return keep(f"<pre><code{attr}>{html.escape(code.rstrip(chr(10)))}</code></pre>")

    text = _CODE_BLOCK.sub(block, markdown)
    text = _INLINE_CODE.sub(lambda m: keep(f"<code>{html.escape(m.group(1))}</code>"), text)
    text = _LINK.sub(
        lambda m: keep(
            f'<a href="{html.escape(m.group(2), quote=True)}">{html.escape(m.group(1))}</a>'
        ),
        text,
    )
    text = html.escape(text, quote=False)
    text = _HEADING.sub(r"<b>\1</b>", text)
    text = _BOLD.sub(lambda m: f"<b>{m.group(1) or m.group(2)}</b>", text)
    text = _ITALIC.sub(lambda m: f"<i>{m.group(1) or m.group(2)}</i>", text)
    text = _STRIKE.sub(r"<s>\1</s>", text)
    return re.sub("\x00(\\d+)\x00", lambda m: slots[int(m.group(1))], text)
