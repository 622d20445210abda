"""Workspace paths: every way out of the workspace is refused with a clear reason; good paths
come back in one canonical form."""

from __future__ import annotations

import pytest
from clawbus_core.store.workspace import (
    MAX_PATH_CHARS,
    MAX_SEGMENT_CHARS,
    is_memory_path,
    normalize_path,
)
from clawbus_protocol.errors import ErrorCode, InvalidRequest

REFUSED = [
    # absolute and drive paths
    ("/etc/passwd", "absolute"),
    ("//etc/passwd", "absolute"),
    ("/", "absolute"),
    ("C:\\Windows\\system32", "absolute"),
    ("c:/x", "absolute"),
    ("C:x", "absolute"),
    ("\\\\server\\share\\x", "absolute"),
    ("\\x", "absolute"),
    # `..` wherever it stands, before or after collapsing
    ("..", "'..'"),
    ("../x", "'..'"),
    ("a/../b", "'..'"),
    ("a/b/..", "'..'"),
    ("a/b/../../..", "'..'"),
    ("./../x", "'..'"),
    ("a//..//b", "'..'"),
    ("a/./../b", "'..'"),
    # other all-dot segments (`...` means `..` to some tools)
    ("...", "only dots"),
    ("a/..../b", "only dots"),
    # percent-encoded, single and double
    ("%2e%2e/x", "percent-encoded"),
    ("%2E%2E%2Fx", "percent-encoded"),
    ("a%2fb", "percent-encoded"),
    ("a%5cb", "percent-encoded"),
    ("a%00b", "percent-encoded"),
    ("%252e%252e/x", "percent-encoded"),
    ("..%2f", "percent-encoded"),
    # NUL and other control or invisible characters
    ("a\x00b", "NUL"),
    ("notes.md\x00.txt", "NUL"),
    ("a\nb", "U+000A"),
    ("a\rb", "U+000D"),
    ("a\tb", "U+0009"),
    ("a\x1bb", "U+001B"),
    ("a\x7fb", "U+007F"),
    ("a\u202eb", "U+202E"),  # right-to-left override
    ("a\u200bb", "U+200B"),  # zero-width space
    # backslashes
    ("a\\b", "backslash"),
    ("a\\..\\b", "backslash"),
    # look-alike dots, slashes and colons
    ("\uff0e\uff0e/x", "U+FF0E"),
    ("a\uff0fb", "U+FF0F"),
    ("a\u2215b", "U+2215"),
    ("a\u2044b", "U+2044"),
    ("a\uff3cb", "U+FF3C"),
    ("\u2025/x", "U+2025"),  # two dot leader: NFKC gives '..'
    ("a\ufe52b", "U+FE52"),
    ("C\uff1a/x", "U+FF1A"),
    ("\uff05 2e", "U+FF05"),
    # empty and dot-only
    ("", "empty"),
    ("   ", "empty"),
    (".", "names no file"),
    ("./", "names no file"),
    ("./././", "names no file"),
    # whitespace around a segment
    (" a.md", "whitespace"),
    ("notes /a.md", "whitespace"),
    # too long
    ("x" * (MAX_PATH_CHARS + 1), "longer than 512"),
    ("a/" * 300, "longer than 512"),
    ("d/" + "x" * (MAX_SEGMENT_CHARS + 1), "segment is longer than 255"),
]


@pytest.mark.parametrize(("raw", "reason"), REFUSED)
def test_refused(raw: str, reason: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        normalize_path(raw)
    assert caught.value.info.code is ErrorCode.INVALID_REQUEST
    assert caught.value.info.details == {"param": "path"}
    message = caught.value.info.message
    assert message.startswith("invalid path ")
    assert reason in message


NORMALISED = [
    ("notes.md", "notes.md"),
    ("notes/todo.md", "notes/todo.md"),
    ("./notes/todo.md", "notes/todo.md"),
    ("notes//todo.md", "notes/todo.md"),
    ("notes/./todo.md", "notes/todo.md"),
    ("notes/", "notes"),
    ("a/./b/.//c/", "a/b/c"),
    ("MEMORY.md", "MEMORY.md"),
    (".hidden", ".hidden"),
    ("a/.env", "a/.env"),
    ("a..b.md", "a..b.md"),
    ("100%.md", "100%.md"),
    ("50%off", "50%off"),
    ("with space.md", "with space.md"),
    ("cafe\u0301.md", "caf\u00e9.md"),  # NFD in, NFC out
    ("\u65e5\u8a18/2026.md", "\u65e5\u8a18/2026.md"),
    ("x" * MAX_SEGMENT_CHARS, "x" * MAX_SEGMENT_CHARS),
    ("y" * 254 + "/" + "z" * 255 + "/w", "y" * 254 + "/" + "z" * 255 + "/w"),  # 512 chars
]


@pytest.mark.parametrize(("raw", "expected"), NORMALISED)
def test_normalised(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected
    assert normalize_path(expected) == expected  # canonical form is a fixed point


@pytest.mark.parametrize(
    ("path", "memory"),
    [
        ("MEMORY.md", True),
        ("memory/2026-11-21.md", True),
        ("memory/people.md", True),
        ("memory.md", False),
        ("MEMORY.txt", False),
        ("memory/sub/x.md", False),
        ("memory/x.txt", False),
        ("notes/MEMORY.md", False),
        ("memory/.md", False),
        ("memory", False),
    ],
)
def test_memory_paths(path: str, memory: bool) -> None:
    assert is_memory_path(path) is memory
