"""The memory tools: search and read the agent's memory, the workspace files `MEMORY.md` and
`memory/*.md` (written with the ordinary file tools).

`memory_search` is Postgres full-text search only (websearch syntax, ranked by ts_rank, with
a highlighted snippet). Vector (embedding) search is not built: clawbus has no embedding
provider yet, so a query finds only files sharing its words (after English stemming).
"""

from __future__ import annotations

from typing import Any

from clawbus_core.store import workspace as store

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


class MemorySearchTool:
    spec = ToolSpec(
        name="memory_search",
        description="Search your memory (MEMORY.md and memory/*.md) by keywords. Returns the "
        "best-matching files first, each with a snippet (matches in **bold**). Supports "
        '"exact phrases", `or`, and -excluded words. Read a hit in full with memory_get.',
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
        with tool_errors():
            hits = await store.search_memory(ctx.pool, ctx.tenant_id, ctx.agent_id, query, limit)
        if not hits:
            return f"no memory matches {query!r}"
        return "\n".join(
            f"{n}. {hit.path} (rank {hit.rank:.4f})\n   {' '.join(hit.snippet.split())}"
            for n, hit in enumerate(hits, start=1)
        )


class MemoryGetTool:
    spec = ToolSpec(
        name="memory_get",
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


def memory_tools() -> list[Tool]:
    return [MemorySearchTool(), MemoryGetTool()]
