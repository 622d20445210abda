"""The memory tools: search and read the agent's memory, the workspace files `MEMORY.md` and
`memory/*.md` (written with the ordinary file tools).

`memory_search` always ranks by keywords: Postgres full-text search (websearch syntax, ranked
by ts_rank, with a highlighted snippet), so a query finds files sharing its words after
English stemming. With an embedding model configured (`embedding_model`) it also ranks by
meaning and fuses the two rankings (reciprocal-rank fusion), so a paraphrase finds a file:

* Memory is indexed lazily, at search time: each memory file whose content (SHA-256) or
  embedding model differs from its stored chunks is re-chunked (`chunk_text`) and embedded
  in the same call as the query, and its old chunks replaced; a deleted file's chunks go
  with it. The file tools need no hook.
* The work per search is bounded: at most MAX_INDEX_FILES files (newest first) and
  MAX_EMBED_INPUTS texts per search, one embedding call. Files beyond that are searched by
  keywords only this time (the result says so) and indexed by the next searches; a file
  larger than the budget (~250 KB) is indexed for its beginning only.
* If the embedding call fails, the search answers by keywords and says why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from clawbus_core.store import memory_vectors as vectors
from clawbus_core.store import workspace as store
from clawbus_protocol.errors import ClawbusError

from clawbus_runner.embeddings import Embedder
from clawbus_runner.tools.base import Tool, ToolContext, ToolError, ToolSpec
from clawbus_runner.tools.workspace import (
    LIMIT_PARAM,
    OFFSET_PARAM,
    int_arg,
    render_lines,
    text_arg,
    tool_errors,
)

DEFAULT_HITS = 5
# Bounded indexing work per search (see the module docstring).
MAX_INDEX_FILES = 16
MAX_EMBED_INPUTS = 256
# Reciprocal-rank fusion's constant: 60 is the usual choice (Cormack et al., 2009).
RRF_K = 60
SNIPPET_CHARS = 240
# `-word` / `-"a phrase"` exclude in websearch syntax; embedded, they would pull toward it.
_EXCLUDED = re.compile(r'(?:^|\s)-(?:"[^"]*"?|\S+)')

_KEYWORDS_ONLY = (
    "Search your memory (MEMORY.md and memory/*.md) by keywords. Returns the best-matching "
    'files first, each with a snippet (matches in **bold**). Supports "exact phrases", '
    "`or`, and -excluded words. Read a hit in full with memory_get."
)
_HYBRID = (
    "Search your memory (MEMORY.md and memory/*.md) by keywords and by meaning, so "
    "different wording for the same thing is found too. Returns the best-matching files "
    'first, each with a snippet (keyword matches in **bold**). Supports "exact phrases", '
    "`or`, and -excluded words. Read a hit in full with memory_get (the lines shown are "
    "where the closest passage is)."
)


@dataclass(frozen=True)
class Found:
    """A memory file in the fused ranking: its place in each ranking (1-based, None if
    absent) and what to show of it."""

    path: str
    score: float
    keyword_rank: int | None
    meaning: vectors.VectorHit | None
    meaning_rank: int | None
    snippet: str


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= SNIPPET_CHARS else flat[: SNIPPET_CHARS - 1].rstrip() + "…"


def fuse(keyword: list[store.MemoryHit], meaning: list[vectors.VectorHit]) -> list[Found]:
    """Both rankings as one by reciprocal-rank fusion, best first: a file's score is the sum
    of 1 / (RRF_K + rank) over the rankings it is in. Ranks, not raw scores, are fused:
    ts_rank and cosine similarity are on scales that do not compare."""
    keyword_rank = {hit.path: n for n, hit in enumerate(keyword, start=1)}
    meaning_rank = {hit.path: n for n, hit in enumerate(meaning, start=1)}
    snippets = {hit.path: " ".join(hit.snippet.split()) for hit in keyword}
    best = {hit.path: hit for hit in meaning}
    found = []
    for path in dict.fromkeys([*keyword_rank, *meaning_rank]):
        k, m = keyword_rank.get(path), meaning_rank.get(path)
        score = sum(1 / (RRF_K + rank) for rank in (k, m) if rank is not None)
        chunk = best.get(path)
        snippet = snippets.get(path) or (_excerpt(chunk.content) if chunk else "")
        found.append(Found(path, score, k, chunk, m, snippet))
    found.sort(key=lambda f: (-f.score, f.path))
    return found


def _render_keywords(query: str, hits: list[store.MemoryHit]) -> str:
    if not hits:
        return f"no memory matches {query!r}"
    return "\n".join(
        f"{n}. {hit.path} (rank {hit.rank:.4f})\n   {' '.join(hit.snippet.split())}"
        for n, hit in enumerate(hits, start=1)
    )


def _render_fused(query: str, found: list[Found]) -> str:
    if not found:
        return f"no memory matches {query!r}"
    lines = []
    for n, hit in enumerate(found, start=1):
        where = hit.path
        why = []
        if hit.keyword_rank is not None:
            why.append(f"keywords #{hit.keyword_rank}")
        if hit.meaning is not None:
            chunk = hit.meaning
            if chunk.start_line == chunk.end_line:
                where += f", line {chunk.start_line}"
            else:
                where += f", lines {chunk.start_line}-{chunk.end_line}"
            why.append(f"meaning #{hit.meaning_rank} ({chunk.similarity:.2f})")
        lines.append(f"{n}. {where} ({', '.join(why)})\n   {hit.snippet}")
    return "\n".join(lines)


class MemorySearchTool:
    def __init__(self, embedder: Embedder | None = None) -> None:
        self.embedder = embedder
        self.spec = ToolSpec(
            name="memory_search",
            http=True,  # reads the agent's own store
            description=_KEYWORDS_ONLY if embedder is None else _HYBRID,
            parameters={
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "Keywords to look for."},
                    "limit": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": store.MAX_SEARCH_HITS,
                        "description": f"Most hits to return. Default: {DEFAULT_HITS}.",
                    },
                },
                "required": ["query"],
                "additionalProperties": False,
            },
        )

    async def run(self, ctx: ToolContext, args: dict[str, Any]) -> str:
        query = text_arg(args, "query")
        limit = int_arg(args, "limit", high=store.MAX_SEARCH_HITS) or DEFAULT_HITS
        if self.embedder is None:
            with tool_errors():
                hits = await store.search_memory(
                    ctx.pool, ctx.tenant_id, ctx.agent_id, query, limit
                )
            return _render_keywords(query, hits)
        # Every keyword hit is a candidate for fusion, not only the first `limit`.
        with tool_errors():
            keyword = await store.search_memory(
                ctx.pool, ctx.tenant_id, ctx.agent_id, query, store.MAX_SEARCH_HITS
            )
        try:
            meaning, waiting = await self._by_meaning(self.embedder, ctx, query)
        except ClawbusError as exc:
            return (
                f"{_render_keywords(query, keyword[:limit])}\n"
                f"[searched by keywords only: meaning search failed: {exc.info.message}]"
            )
        text = _render_fused(query, fuse(keyword, meaning)[:limit])
        if waiting:
            text += (
                f"\n[{waiting} memory file(s) changed since they were indexed for meaning and "
                "were searched by keywords only; later searches index them]"
            )
        return text

    async def _by_meaning(
        self, embedder: Embedder, ctx: ToolContext, query: str
    ) -> tuple[list[vectors.VectorHit], int]:
        """Index what is due, then rank by similarity to the query: the hits and how many
        stale files had to wait."""
        model = embedder.model
        stale = await vectors.stale_memory(
            ctx.pool, ctx.tenant_id, ctx.agent_id, model, MAX_INDEX_FILES
        )
        budget = MAX_EMBED_INPUTS - 1  # the query is one of the inputs
        batch: list[tuple[vectors.MemoryText, list[vectors.Chunk]]] = []
        waiting = list(stale.waiting)
        for file in stale.due:
            chunks = vectors.chunk_text(file.content)
            if batch and len(chunks) > budget:
                waiting.append(file.path)
                continue
            batch.append((file, chunks[:budget]))
            budget -= len(batch[-1][1])
        wanted = " ".join(_EXCLUDED.sub(" ", query).split())
        texts = [wanted or query, *(c.text for _, chunks in batch for c in chunks)]
        embedded = await embedder.embed(texts)
        start = 1
        for file, chunks in batch:
            end = start + len(chunks)
            await vectors.store_chunks(
                ctx.pool,
                ctx.tenant_id,
                ctx.agent_id,
                file,
                model=model,
                chunks=chunks,
                vectors=embedded[start:end],
            )
            start = end
        if not wanted:  # nothing but exclusions: only keywords can answer
            return [], len(waiting)
        hits = await vectors.search_chunks(
            ctx.pool,
            ctx.tenant_id,
            ctx.agent_id,
            embedded[0],
            model=model,
            limit=store.MAX_SEARCH_HITS,
            exclude=waiting,
        )
        return hits, len(waiting)


class MemoryGetTool:
    spec = ToolSpec(
        name="memory_get",
        http=True,  # reads the agent's own store
        description="Read a memory file (MEMORY.md or memory/<name>.md), whole or a range "
        "of lines. For other workspace files use `read`.",
        parameters={
            "type": "object",
            "properties": {
                "path": {
                    "type": "string",
                    "description": "MEMORY.md or memory/<name>.md, e.g. as memory_search "
                    "returned it.",
                },
                "offset": OFFSET_PARAM,
                "limit": LIMIT_PARAM,
            },
            "required": ["path"],
            "additionalProperties": False,
        },
    )

    async def run(self, ctx: ToolContext, args: dict[str, Any]) -> str:
        raw = text_arg(args, "path")
        offset, limit = int_arg(args, "offset"), int_arg(args, "limit")
        with tool_errors():
            path = store.normalize_path(raw)
            if not store.is_memory_path(path):
                raise ToolError(
                    f"{path} is not a memory file: memory_get reads only MEMORY.md and "
                    "memory/*.md (use `read` for other files)"
                )
            file = await store.read_file(ctx.pool, ctx.tenant_id, ctx.agent_id, path)
        return render_lines(file, offset, limit)


def memory_tools(embedder: Embedder | None = None) -> list[Tool]:
    """The memory tools; `memory_search` ranks by meaning too when given an embedder."""
    return [MemorySearchTool(embedder), MemoryGetTool()]
