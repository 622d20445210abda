"""Heartbeats: the prompt a heartbeat run gets, and whether its reply is the quiet
acknowledgement `HEARTBEAT_OK` (which is not delivered anywhere)."""

from __future__ import annotations

HEARTBEAT_FILE = "HEARTBEAT.md"
ACK = "HEARTBEAT_OK"

PROMPT = (
    "This is a heartbeat: a periodic check-in, not a message from the user. Follow the "
    "checklist in HEARTBEAT.md strictly; do not infer or repeat old tasks from earlier "
    f"conversations. If nothing needs attention, reply exactly {ACK}."
)


def is_empty(checklist: str) -> bool:
    """A HEARTBEAT.md of blank lines and headings only: there is nothing to check."""
    return all(not line.strip() or line.lstrip().startswith("#") for line in checklist.splitlines())


def prompt(extra: str, checklist: str | None) -> str:
    """The heartbeat's user turn: the standing instruction, the job's own text, the file."""
    parts = [PROMPT]
    if extra.strip():
        parts.append(extra.strip())
    if checklist is not None:
        parts.append(f"## {HEARTBEAT_FILE}\n\n{checklist.strip()}")
    return "\n\n".join(parts)


def is_ack(reply: str, max_chars: int) -> bool:
    """The reply says nothing needs attention: it starts (or ends) with HEARTBEAT_OK, with
    at most `max_chars` characters besides."""
    text = reply.strip().strip("*_`").strip()
    if text.startswith(ACK):
        rest = text[len(ACK) :]
    elif text.endswith(ACK):
        rest = text[: -len(ACK)]
    else:
        return False
    return len(rest.strip(" \n\t.!*_`")) <= max_chars
