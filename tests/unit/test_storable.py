"""What Postgres text and jsonb cannot hold is refused as a 400 naming the field."""

from __future__ import annotations

import pytest
from clawbus_core.db import refuse_unstorable
from clawbus_protocol.errors import InvalidRequest


@pytest.mark.parametrize(
    ("value", "param"),
    [
        ({"a": "x\x00y"}, "a"),
        ({"a": {"b": ["ok", "\ud989"]}}, "a.b.1"),
        ({"k\x00": 1}, "<key>"),
        ({"outer": {"\udc15": 1}}, "outer.<key>"),
        ("\x00", None),
    ],
)
def test_nul_and_lone_surrogates_are_refused_naming_the_field(
    value: object, param: str | None
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        refuse_unstorable(value)
    assert refused.value.info.details.get("param") == param


def test_anything_else_passes() -> None:
    refuse_unstorable({"emoji": "🦀", "list": [1, None, {"ok": "ß"}], "": ""})
