"""Agent workspaces: each agent's files (AGENTS.md, MEMORY.md, memory/*.md, notes...) as rows of
`workspace_files`, never files on the host disk.

Every function is scoped by (tenant_id, agent_id), and every path passes `normalize_path`
first: a path is only ever a key in the table, but it is shown to people and may one day be
exported to a disk, so anything that could mean "elsewhere" on some system is refused rather
than repaired.

Memory is the files `MEMORY.md` and `memory/*.md`; `search_memory` ranks them with Postgres
full-text search over the generated `search` column.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from clawbus_protocol.errors import InvalidRequest, NotFound, PayloadTooLarge

from clawbus_core.db import Pool

MAX_FILE_BYTES = 1024 * 1024
MAX_FILES_PER_AGENT = 10_000
MAX_PATH_CHARS = 512
MAX_SEGMENT_CHARS = 255
MAX_SEARCH_HITS = 20

MEMORY_FILE = "MEMORY.md"
# Written so Python and Postgres (`~`) read it alike.
_MEMORY_PATH = re.compile(r"^memory/[^/]+\.md$")

_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_DRIVE = re.compile(r"^[A-Za-z]:")
# Characters that look like a separator or a dot but that NFKC does not fold to one (the ones
# it does fold, such as U+FF0E and U+FF0F, are caught by comparing with their NFKC form).
_LOOKALIKES = frozenset("\u2215\u2044\u29f8\u29f9\u2216\u3002")
_MEANINGFUL = frozenset("./\\%:")


@dataclass(frozen=True)
class WorkspaceFile:
    path: str
    content: str
    updated_at: datetime

    @property
    def size(self) -> int:
        return len(self.content.encode())


@dataclass(frozen=True)
class FileInfo:
    path: str
    size: int  # bytes (UTF-8)
    updated_at: datetime


@dataclass(frozen=True)
class MemoryHit:
    path: str
    snippet: str
    rank: float


def _refuse(raw: str, problem: str) -> InvalidRequest:
    return InvalidRequest(f"invalid path {raw[:80]!r}: {problem}", param="path")


def _unicode_trick(char: str) -> bool:
    if char.isascii():
        return False
    if char in _LOOKALIKES:
        return True
    return any(c in _MEANINGFUL for c in unicodedata.normalize("NFKC", char))


def normalize_path(raw: str) -> str:
    """The canonical relative POSIX form of a workspace path, or InvalidRequest saying why not.

    `./` and repeated slashes collapse and text is NFC-normalised; everything that could
    escape the workspace or hide what it names (absolute or drive paths, `..`, percent
    escapes, backslashes, control characters, look-alike dots and slashes) is refused.
    """
    if not raw or not raw.strip():
        raise _refuse(raw, "the path is empty")
    if len(raw) > MAX_PATH_CHARS:
        raise _refuse(raw, f"the path is longer than {MAX_PATH_CHARS} characters")
    for char in raw:
        if char == "\0":
            raise _refuse(raw, "the path contains a NUL character")
        if unicodedata.category(char).startswith("C"):
            raise _refuse(
                raw, f"the path contains control or invisible character U+{ord(char):04X}"
            )
    if _PERCENT_ESCAPE.search(raw):
        raise _refuse(
            raw,
            "percent-encoded escapes (such as %2e) are not allowed; write the "
            "characters themselves",
        )
    text = unicodedata.normalize("NFC", raw)
    for char in text:
        if _unicode_trick(char):
            name = unicodedata.name(char, "unnamed")
            raise _refuse(
                raw, f"U+{ord(char):04X} ({name}) looks like a dot, slash or colon; use ASCII"
            )
    if text.startswith(("/", "\\")) or _DRIVE.match(text):
        raise _refuse(
            raw,
            "absolute and drive paths are not allowed; give a path relative to the "
            "workspace root, such as notes/todo.md",
        )
    if "\\" in text:
        raise _refuse(raw, "backslashes are not allowed; separate folders with '/'")
    segments = [s for s in text.split("/") if s not in ("", ".")]
    for segment in segments:
        if segment == "..":
            raise _refuse(raw, "'..' is not allowed in a path")
        if set(segment) == {"."}:
            raise _refuse(raw, f"a path segment cannot be only dots ({segment!r})")
        if segment != segment.strip():
            raise _refuse(raw, "a path segment cannot start or end with whitespace")
        if len(segment) > MAX_SEGMENT_CHARS:
            raise _refuse(raw, f"a path segment is longer than {MAX_SEGMENT_CHARS} characters")
    if not segments:
        raise _refuse(raw, "the path names no file")
    path = "/".join(segments)
    if len(path) > MAX_PATH_CHARS:
        raise _refuse(raw, f"the path is longer than {MAX_PATH_CHARS} characters")
    return path


def is_memory_path(path: str) -> bool:
    """True for a normalised path that is memory: MEMORY.md or memory/<name>.md."""
    return path == MEMORY_FILE or _MEMORY_PATH.fullmatch(path) is not None


def _check_text(text: str, what: str) -> int:
    """The UTF-8 size of text Postgres can store, or InvalidRequest."""
    if "\0" in text:
        raise InvalidRequest(f"{what} contains a NUL character, which cannot be stored")
    try:
        return len(text.encode())
    except UnicodeEncodeError as exc:
        raise InvalidRequest(f"{what} is not valid Unicode text") from exc


def _check_size(path: str, size: int) -> None:
    if size > MAX_FILE_BYTES:
        raise PayloadTooLarge(
            f"{path} would be {size} bytes; a workspace file holds at most {MAX_FILE_BYTES}",
            path=path,
            size=size,
            limit=MAX_FILE_BYTES,
        )


def _missing(path: str) -> NotFound:
    return NotFound(f"no file {path} in the workspace", path=path)


_READ = """
SELECT path, content, updated_at FROM workspace_files
WHERE tenant_id = $1 AND agent_id = $2 AND path = $3
"""

# One statement: the agent must belong to the tenant, and a new file only fits under the limit.
_WRITE = """
WITH a AS (
    SELECT id FROM agents WHERE id = $2 AND tenant_id = $1
), w AS (
    INSERT INTO workspace_files (tenant_id, agent_id, path, content)
    SELECT $1, a.id, $3, $4 FROM a
    WHERE EXISTS (SELECT 1 FROM workspace_files WHERE agent_id = $2 AND path = $3)
       OR (SELECT count(*) FROM workspace_files WHERE agent_id = $2) < $5
    ON CONFLICT (agent_id, path) DO UPDATE SET content = EXCLUDED.content, updated_at = now()
    RETURNING (xmax = 0) AS created
)
SELECT EXISTS (SELECT 1 FROM a) AS agent_found, (SELECT created FROM w) AS created
"""

_LOCK = """
SELECT content FROM workspace_files
WHERE tenant_id = $1 AND agent_id = $2 AND path = $3
FOR UPDATE
"""

_UPDATE = """
UPDATE workspace_files SET content = $4, updated_at = now()
WHERE tenant_id = $1 AND agent_id = $2 AND path = $3
"""

_LIST = """
SELECT path, octet_length(content) AS size, updated_at FROM workspace_files
WHERE tenant_id = $1 AND agent_id = $2 AND starts_with(path, $3)
ORDER BY path COLLATE "C"
LIMIT $4
"""

_DELETE = """
DELETE FROM workspace_files WHERE tenant_id = $1 AND agent_id = $2 AND path = $3 RETURNING path
"""

# Rank first, then build snippets for the few hits only: ts_headline reparses the content.
_SEARCH = """
WITH q AS (
    SELECT websearch_to_tsquery('english', $3) AS q
), hits AS (
    SELECT f.path, f.content, ts_rank(f.search, q.q) AS rank
    FROM workspace_files f, q
    WHERE f.tenant_id = $1 AND f.agent_id = $2
      AND (f.path = $5 OR f.path ~ $6)
      AND f.search @@ q.q
    ORDER BY rank DESC, f.path
    LIMIT $4
)
SELECT hits.path, hits.rank,
       ts_headline('english', hits.content, q.q,
                   'StartSel=**, StopSel=**, MaxWords=35, MinWords=15, MaxFragments=2, '
                   'FragmentDelimiter=" ... "')
           AS snippet
FROM hits, q
ORDER BY hits.rank DESC, hits.path
"""


async def read_file(pool: Pool, tenant_id: UUID, agent_id: UUID, path: str) -> WorkspaceFile:
    path = normalize_path(path)
    row = await pool.fetchrow(_READ, tenant_id, agent_id, path)
    if row is None:
        raise _missing(path)
    return WorkspaceFile(path=row["path"], content=row["content"], updated_at=row["updated_at"])


async def write_file(pool: Pool, tenant_id: UUID, agent_id: UUID, path: str, content: str) -> bool:
    """Create or replace the file; True if it was created."""
    path = normalize_path(path)
    _check_size(path, _check_text(content, "the content"))
    row = await pool.fetchrow(_WRITE, tenant_id, agent_id, path, content, MAX_FILES_PER_AGENT)
    assert row is not None
    if not row["agent_found"]:
        raise NotFound(f"agent {agent_id} not found", agent=str(agent_id))
    if row["created"] is None:
        raise PayloadTooLarge(
            f"the workspace already holds {MAX_FILES_PER_AGENT} files; delete some first",
            limit=MAX_FILES_PER_AGENT,
        )
    created: bool = row["created"]
    return created


async def edit_file(
    pool: Pool,
    tenant_id: UUID,
    agent_id: UUID,
    path: str,
    *,
    old: str,
    new: str,
    replace_all: bool = False,
) -> int:
    """Replace the exact text `old` with `new`; return how many times it was replaced.

    `old` must occur exactly once unless `replace_all`. The row is locked while the new
    content is computed, so concurrent edits apply one after the other.
    """
    path = normalize_path(path)
    if not old:
        raise InvalidRequest("the text to replace is empty", param="old")
    _check_text(old, "the text to replace")
    _check_text(new, "the replacement text")
    async with pool.acquire() as conn, conn.transaction():
        content = await conn.fetchval(_LOCK, tenant_id, agent_id, path)
        if content is None:
            raise _missing(path)
        found = content.count(old)
        if found == 0:
            raise InvalidRequest(
                f"the text to replace does not occur in {path}; read the file and copy the "
                "text exactly",
                path=path,
            )
        if found > 1 and not replace_all:
            raise InvalidRequest(
                f"the text to replace occurs {found} times in {path}; include more "
                "surrounding text to make it unique, or replace all",
                path=path,
                occurrences=found,
            )
        updated = content.replace(old, new)
        _check_size(path, len(updated.encode()))
        await conn.execute(_UPDATE, tenant_id, agent_id, path, updated)
    return int(found)


async def list_files(
    pool: Pool,
    tenant_id: UUID,
    agent_id: UUID,
    directory: str | None = None,
    *,
    limit: int = 1000,
) -> list[FileInfo]:
    """Files under `directory` (the whole workspace if None), by path; at most `limit`."""
    prefix = ""
    if directory and directory not in (".", "./"):
        prefix = normalize_path(directory) + "/"
    limit = max(1, min(limit, MAX_FILES_PER_AGENT))
    rows = await pool.fetch(_LIST, tenant_id, agent_id, prefix, limit)
    return [FileInfo(path=r["path"], size=r["size"], updated_at=r["updated_at"]) for r in rows]


async def delete_file(pool: Pool, tenant_id: UUID, agent_id: UUID, path: str) -> None:
    path = normalize_path(path)
    if await pool.fetchval(_DELETE, tenant_id, agent_id, path) is None:
        raise _missing(path)


async def search_memory(
    pool: Pool, tenant_id: UUID, agent_id: UUID, query: str, limit: int = 5
) -> list[MemoryHit]:
    """Memory files matching `query` (web-search syntax: words, "phrases", -not, or), best
    first, each with a snippet whose matches are marked **like this**."""
    if not query.strip():
        raise InvalidRequest("the search query is empty", param="query")
    _check_text(query, "the search query")
    limit = max(1, min(limit, MAX_SEARCH_HITS))
    rows = await pool.fetch(
        _SEARCH, tenant_id, agent_id, query, limit, MEMORY_FILE, _MEMORY_PATH.pattern
    )
    return [MemoryHit(path=r["path"], snippet=r["snippet"], rank=r["rank"]) for r in rows]
