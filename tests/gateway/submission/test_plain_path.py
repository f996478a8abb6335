"""MAIL and RCPT arguments of the everyday form skip aiosmtpd's address parser (issue 7), to the same result."""

from __future__ import annotations

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import given
from hypothesis import strategies as st

from gateway.submission.session import _plain_path

PARSER = SMTP.__new__(SMTP)  # only `_getaddr` is used, which needs no connection
PARSER.local_part_limit = 0

FRAGMENTS = ["<", ">", "@", ".", "a", "Z", "0", "-", "+", "=", "'", '"', "(", ")", "[", "]", " ", "\t", ":", ",",
             "é", "\\", "SIZE=10", "BODY=8BITMIME", "example.org", "x"]  # fmt: skip


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("<alice@example.ac.uk>", ("alice@example.ac.uk", "")),
        ("<alice+tag@example.ac.uk> SIZE=10240 BODY=8BITMIME", ("alice+tag@example.ac.uk", "SIZE=10240 BODY=8BITMIME")),
        ("<o'brien.x@sub-1.example.org>\t SMTPUTF8", ("o'brien.x@sub-1.example.org", "SMTPUTF8")),
    ],
)
def test_everyday_paths_are_read_without_the_parser(argument: str, expected: tuple[str, str]) -> None:
    assert _plain_path(argument) == expected == PARSER._getaddr(argument)


@pytest.mark.parametrize(
    "argument",
    ["<>", '<"a b"@x.org>', "<a@[192.0.2.1]>", "<a..b@x.org>", "<a@x.org.>", "<a@b> (comment)", "<é@x.org>", "<a@b>X"],
)
def test_anything_else_is_left_to_the_parser(argument: str) -> None:
    assert _plain_path(argument) is None


@given(st.lists(st.sampled_from(FRAGMENTS), max_size=16).map("".join))
def test_the_shortcut_agrees_with_aiosmtpd(argument: str) -> None:
    plain = _plain_path(argument.strip())
    if plain is not None:
        assert plain == PARSER._getaddr(argument.strip())


@given(
    st.from_regex(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,8}(\.[A-Za-z0-9+_-]{1,5}){0,2}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9-]{1,8}(\.[A-Za-z0-9-]{1,8}){0,3}", fullmatch=True),
    st.sampled_from(["", " SIZE=1", "  NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+40b", "\tBODY=7BIT"]),
)
def test_every_plain_path_is_taken_and_agrees(local: str, domain: str, rest: str) -> None:
    argument = f"<{local}@{domain}>{rest}"
    assert _plain_path(argument) is not None
    assert _plain_path(argument) == PARSER._getaddr(argument)
