"""Memory embeddings: the chunks of each memory file with their vectors, for `memory_search`.

* memory_chunks: one row per chunk of a memory file (MEMORY.md, memory/*.md), written by the
  runner at search time when an embedding model is configured. `content_sha256` and `model`
  say which version of the file, embedded by which model, the row belongs to: a file whose
  rows disagree with its current content or the configured model is re-indexed. A file with
  no text keeps one row with no embedding, so its hash is still recorded.
* The vectors are plain `real[]` (pgvector is not available in the embedded Postgres),
  L2-normalised by the runner so cosine similarity is a dot product, computed in SQL over
  the agent's chunks: vectors never leave the database and the runner's event loop does no
  arithmetic. It is a scan (~0.12 ms per 1 536-dimension chunk); an agent's memory is a few
  hundred chunks, and a workspace holds at most 10 000 files.
* The foreign key to workspace_files deletes a file's chunks with the file.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE memory_chunks (
            tenant_id       uuid NOT NULL,
            agent_id        uuid NOT NULL,
            path            text NOT NULL,
            chunk_no        integer NOT NULL CHECK (chunk_no >= 0),
            content         text NOT NULL,
            start_line      integer NOT NULL,
            end_line        integer NOT NULL,
            embedding       real[] NOT NULL,
            model           text NOT NULL,
            content_sha256  bytea NOT NULL,
            created_at      timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (agent_id, path, chunk_no),
            FOREIGN KEY (agent_id, path) REFERENCES workspace_files (agent_id, path)
                ON DELETE CASCADE
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE memory_chunks")
