"""The `exim` fixture drives the real Exim binary: string expansion (-be) and SMTP sessions (-bh).

These pin the behaviour of Exim's own `${prvs}` and `${prvscheck}` that our BATV codec must match.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

import pytest
from components import Exim, EximError

ADDRESS = "alice@example.ac.uk"
PRVS = re.compile(r"prvs=(\d)(\d{3})([0-9a-f]{6})=(.+)")


def expiry_days_now() -> set[str]:
    """Exim's expiry stamp: low three digits of (today + 7) in days since 1970, UTC."""
    return {f"{(int(time.time()) // 86400 + 7) % 1000:03d}"}


def test_expand_returns_the_expansion(exim: Exim) -> None:
    assert exim.expand("${lc:ABC}") == "abc"


def test_failed_expansion_raises_with_exims_reason(exim: Exim) -> None:
    with pytest.raises(EximError, match="qualified email address"):
        exim.expand("${prvs{alice}{secret}}")


def test_prvs_has_key_digit_expiry_day_and_lowercase_hmac_of_the_address_as_given(exim: Exim) -> None:
    before = expiry_days_now()
    signed = exim.expand("${prvs{Alice@Example.ac.uk}{secret}{1}}")
    match = PRVS.fullmatch(signed)
    assert match is not None, signed
    key, day, mac, address = match.groups()
    assert (key, address) == ("1", "Alice@Example.ac.uk")
    assert day in before | expiry_days_now()  # a run across midnight sees either day
    expected = hmac.new(b"secret", f"1{day}Alice@Example.ac.uk".encode(), hashlib.sha1).hexdigest()[:6]
    assert mac == expected


def test_prvscheck_accepts_its_own_signature(exim: Exim) -> None:
    signed = exim.expand(f"${{prvs{{{ADDRESS}}}{{secret}}{{1}}}}")
    check = f"${{prvscheck{{{signed}}}{{secret}}"
    assert exim.expand(check + "{$prvscheck_result:$prvscheck_keynum:$prvscheck_address}}") == f"1:1:{ADDRESS}"
    assert exim.expand(check + "}") == ADDRESS
    assert exim.expand(check + "}/$prvscheck_result") == f"{ADDRESS}/1"


def test_prvscheck_with_wrong_secret_leaves_result_empty_but_still_yields(exim: Exim) -> None:
    signed = exim.expand(f"${{prvs{{{ADDRESS}}}{{secret}}{{1}}}}")
    assert exim.expand(f"${{prvscheck{{{signed}}}{{wrong}}{{[$prvscheck_result]}}}}") == "[]"
    assert exim.expand(f"${{prvscheck{{{signed}}}{{wrong}}}}") == ADDRESS


def test_rcpt_acl_sees_the_local_part_lowercased(exim: Exim) -> None:
    config = (
        "acl_smtp_rcpt = check_rcpt\n"
        "begin acl\n"
        "check_rcpt:\n"
        "  deny message = seen $local_part@$domain\n"
    )
    session = "EHLO client.test\r\nMAIL FROM:<>\r\nRCPT TO:<Alice@Example.AC.uk>\r\nQUIT\r\n"
    result = exim.run(["-bh", "192.0.2.1"], input=session, config_text=config)
    assert "550 seen alice@example.ac.uk" in result.stdout
