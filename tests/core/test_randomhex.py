"""twistgw.randomhex: random ids a block at a time, and a fresh block after fork."""

from __future__ import annotations

import os
import string
from unittest import mock

import pytest

from twistgw import randomhex
from twistgw.randomhex import BLOCK_IDS, RandomHex


def test_ids_have_the_width_asked_for_and_are_hex() -> None:
    source = RandomHex(40)
    ids = [source.take() for _ in range(BLOCK_IDS * 2 + 3)]  # across block ends
    assert all(len(i) == 40 and set(i) <= set(string.hexdigits.lower()) for i in ids)
    assert len(set(ids)) == len(ids)


def test_one_urandom_call_per_block() -> None:
    source = RandomHex(32)
    with mock.patch.object(randomhex.os, "urandom", wraps=os.urandom) as urandom:
        for _ in range(BLOCK_IDS * 2):
            source.take()
    assert urandom.call_count == 2
    assert urandom.call_args.args == (16 * BLOCK_IDS,)


@pytest.mark.parametrize("digits", [0, -2, 7])
def test_an_odd_or_empty_width_is_refused(digits: int) -> None:
    with pytest.raises(ValueError, match="positive even"):
        RandomHex(digits)


def test_reseed_drops_the_rest_of_the_block() -> None:
    source = RandomHex(8)
    with mock.patch.object(randomhex.os, "urandom", side_effect=[b"\x01" * 4 * BLOCK_IDS,
                                                                 b"\x02" * 4 * BLOCK_IDS]):
        assert source.take() == "01010101"
        source.reseed()
        assert source.take() == "02020202"


def test_a_forked_child_starts_from_a_fresh_block() -> None:
    source = RandomHex(32)
    source.take()  # the parent holds the rest of a block
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(write_end, ",".join(source.take() for _ in range(5)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        child = pipe.read().decode().split(",")
    os.waitpid(pid, 0)
    parent = [source.take() for _ in range(5)]
    assert len(child) == 5 and not set(child) & set(parent)
