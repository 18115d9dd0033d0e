"""Identifiers: the fast base32 spells what the standard library does, and ids carry their time."""

from __future__ import annotations

import base64
import time

from hypothesis import given
from hypothesis import strategies as st

from shared.kernel.ids import base32_128, id_time, new_id


@given(st.binary(min_size=16, max_size=16))
def test_base32_matches_the_standard_library(raw):
    expected = base64.b32encode(raw).decode().lower().rstrip("=")
    assert base32_128(int.from_bytes(raw, "big")) == expected
    assert len(expected) == 26


def test_new_ids_are_prefixed_distinct_and_carry_their_time():
    before = time.time()
    made = [new_id("run") for _ in range(1000)]
    after = time.time()
    assert len(set(made)) == 1000
    for value in made:
        prefix, _, body = value.partition("_")
        assert prefix == "run" and len(body) == 26 and set(body) <= set("abcdefghijklmnopqrstuvwxyz234567")
        stamp = id_time(value)
        assert stamp is not None and before - 0.002 <= stamp <= after + 0.002
    # Time-ordered by their time part (the base32 alphabet does not sort as text: "2" < "a").
    first = new_id("run")
    time.sleep(0.003)
    later = id_time(new_id("run"))
    assert later is not None and later > (id_time(first) or 0)
