"""Postgres queries, one module per table family; each hot-path step is one statement."""
