"""Memory chunks and their embeddings (`memory_chunks`), for searching memory by meaning.

A memory file (MEMORY.md, memory/*.md; see `workspace`) is cut into chunks by `chunk_text`
and each chunk is stored with its embedding, the model that made it and the SHA-256 of the
file content it came from. Nothing hooks the file writes: `stale_memory` compares every
memory file with its rows at search time and names the files to (re)index, and
`store_chunks` replaces a file's rows. Deleting a file deletes its rows (foreign key).

Vectors are stored L2-normalised, so `search_chunks` ranks by a dot product computed in SQL
(see migration 0003 for why plain arrays and SQL).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

import asyncpg

from clawbus_core.db import Pool

# Reused so Python and SQL agree on what memory is (the pattern is written for both).
from clawbus_core.store.workspace import _MEMORY_PATH, MEMORY_FILE

CHUNK_CHARS = 1000

_HEADING = re.compile(r"#{1,6}\s")


@dataclass(frozen=True)
class Chunk:
    text: str
    start_line: int  # 1-based, as memory_get counts lines
    end_line: int


@dataclass(frozen=True)
class MemoryText:
    """A memory file due for (re)indexing, as it is now."""

    path: str
    content: str

    @property
    def sha256(self) -> bytes:
        return hashlib.sha256(self.content.encode()).digest()


@dataclass(frozen=True)
class StaleMemory:
    """Memory files whose rows do not match their content or the model, newest first:
    `due` with their content (at most the limit asked for), `waiting` the rest by path."""

    due: list[MemoryText]
    waiting: list[str]


@dataclass(frozen=True)
class VectorHit:
    """A file's chunk most similar to the query."""

    path: str
    chunk_no: int
    content: str
    start_line: int
    end_line: int
    similarity: float


@dataclass
class _Unit:
    text: str
    start_line: int
    end_line: int
    heading: bool


def _split_line(line: str, size: int) -> list[str]:
    """A line longer than `size` in pieces, cut at a space where there is one."""
    pieces: list[str] = []
    while len(line) > size:
        cut = line.rfind(" ", 0, size)
        if cut < size // 2:
            cut = size
        pieces.append(line[:cut].rstrip())
        line = line[cut:].lstrip()
    if line:
        pieces.append(line)
    return pieces


def _units(lines: list[str], size: int) -> list[_Unit]:
    """Paragraphs and headings, each at most `size` characters (long ones split by lines)."""
    units: list[_Unit] = []
    paragraph: list[tuple[int, str]] = []

    def flush() -> None:
        current: _Unit | None = None
        for number, line in paragraph:
            for piece in _split_line(line, size):
                if current is not None and len(current.text) + 1 + len(piece) <= size:
                    current.text += "\n" + piece
                    current.end_line = number
                    continue
                current = _Unit(piece, number, number, heading=False)
                units.append(current)
        paragraph.clear()

    for number, line in enumerate(lines, start=1):
        if not line.strip():
            flush()
        elif _HEADING.match(line):
            flush()
            units.extend(_Unit(p, number, number, heading=True) for p in _split_line(line, size))
        else:
            paragraph.append((number, line))
    flush()
    return units


def chunk_text(text: str, size: int = CHUNK_CHARS) -> list[Chunk]:
    """Chunks of about `size` characters (never more): paragraphs packed together, a new
    chunk at each heading that follows text, so a heading stays with its first paragraph.
    Text with nothing but whitespace has no chunks."""
    chunks: list[Chunk] = []
    parts: list[_Unit] = []
    has_body = False

    def close() -> None:
        if parts:
            text = "\n\n".join(u.text for u in parts)
            chunks.append(Chunk(text, parts[0].start_line, parts[-1].end_line))
            parts.clear()

    for unit in _units(text.split("\n"), size):
        used = sum(len(u.text) + 2 for u in parts)
        if (unit.heading and has_body) or used + len(unit.text) > size:
            close()
            has_body = False
        parts.append(unit)
        has_body = has_body or not unit.heading
    close()
    return chunks


# Which memory files have rows that disagree with their content or the model (or none).
# A file's hash is computed here, so the content of only the `due` files is sent back.
_STALE = """
WITH files AS (
    SELECT f.path, f.content, f.updated_at, sha256(convert_to(f.content, 'UTF8')) AS sha
    FROM workspace_files f
    WHERE f.tenant_id = $1 AND f.agent_id = $2 AND (f.path = $4 OR f.path ~ $5)
), stale AS (
    SELECT files.path, files.content, files.updated_at
    FROM files LEFT JOIN LATERAL (
        SELECT bool_and(c.content_sha256 = files.sha AND c.model = $3) AS fresh
        FROM memory_chunks c
        WHERE c.agent_id = $2 AND c.path = files.path
    ) indexed ON true
    WHERE indexed.fresh IS NOT TRUE
)
SELECT path,
       CASE WHEN row_number() OVER (ORDER BY updated_at DESC, path) <= $6 THEN content END
           AS content
FROM stale
ORDER BY updated_at DESC, path
"""

_CLEAR = "DELETE FROM memory_chunks WHERE tenant_id = $1 AND agent_id = $2 AND path = $3"

# Upsert: a concurrent search may be indexing the same file (its DELETE does not see rows
# this one inserted); both write the rows of one content, and a mix is re-indexed later.
_INSERT = """
INSERT INTO memory_chunks (tenant_id, agent_id, path, chunk_no, content, start_line, end_line,
                           embedding, model, content_sha256)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (agent_id, path, chunk_no) DO UPDATE SET
    content = EXCLUDED.content, start_line = EXCLUDED.start_line,
    end_line = EXCLUDED.end_line, embedding = EXCLUDED.embedding, model = EXCLUDED.model,
    content_sha256 = EXCLUDED.content_sha256, created_at = now()
"""

# Rows without an embedding (a file with no text) have cardinality 0 and never match.
_SEARCH = """
WITH scored AS (
    SELECT c.path, c.chunk_no, c.content, c.start_line, c.end_line,
           (SELECT sum(a * b) FROM unnest(c.embedding, $4::float8[]) AS v(a, b)) AS similarity
    FROM memory_chunks c
    WHERE c.tenant_id = $1 AND c.agent_id = $2 AND c.model = $3
      AND cardinality(c.embedding) = cardinality($4::float8[])
      AND NOT (c.path = ANY($6::text[]))
), best AS (
    SELECT DISTINCT ON (path) * FROM scored
    WHERE similarity > 0
    ORDER BY path, similarity DESC, chunk_no
)
SELECT * FROM best ORDER BY similarity DESC, path LIMIT $5
"""


async def stale_memory(
    pool: Pool, tenant_id: UUID, agent_id: UUID, model: str, limit: int
) -> StaleMemory:
    """The memory files to (re)index for `model`: the `limit` most recently updated with
    their content, the others by path."""
    rows = await pool.fetch(
        _STALE, tenant_id, agent_id, model, MEMORY_FILE, _MEMORY_PATH.pattern, limit
    )
    due = [MemoryText(r["path"], r["content"]) for r in rows if r["content"] is not None]
    waiting = [r["path"] for r in rows if r["content"] is None]
    return StaleMemory(due=due, waiting=waiting)


async def store_chunks(
    pool: Pool,
    tenant_id: UUID,
    agent_id: UUID,
    file: MemoryText,
    *,
    model: str,
    chunks: Sequence[Chunk],
    vectors: Sequence[Sequence[float]],
) -> bool:
    """Replace the file's rows with `chunks` and their `vectors` (L2-normalised); a file
    with no chunks gets one row with no embedding, recording its hash. False if the file
    was deleted meanwhile (nothing is stored)."""
    if len(chunks) != len(vectors):
        raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
    sha = file.sha256
    rows = [
        (tenant_id, agent_id, file.path, n, c.text, c.start_line, c.end_line, list(v), model, sha)
        for n, (c, v) in enumerate(zip(chunks, vectors, strict=True))
    ] or [(tenant_id, agent_id, file.path, 0, "", 0, 0, [], model, sha)]
    try:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(_CLEAR, tenant_id, agent_id, file.path)
            await conn.executemany(_INSERT, rows)
    except asyncpg.ForeignKeyViolationError:
        return False
    return True


async def search_chunks(
    pool: Pool,
    tenant_id: UUID,
    agent_id: UUID,
    vector: Sequence[float],
    *,
    model: str,
    limit: int,
    exclude: Sequence[str] = (),
) -> list[VectorHit]:
    """The files whose chunks embedded by `model` are most similar to `vector`
    (L2-normalised), one hit per file (its best chunk), best first; files in `exclude`
    (not indexed yet in their current version) are left out."""
    rows = await pool.fetch(_SEARCH, tenant_id, agent_id, model, list(vector), limit, list(exclude))
    return [
        VectorHit(
            path=r["path"],
            chunk_no=r["chunk_no"],
            content=r["content"],
            start_line=r["start_line"],
            end_line=r["end_line"],
            similarity=float(r["similarity"]),
        )
        for r in rows
    ]
