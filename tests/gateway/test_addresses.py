"""Canonical addresses, domains and fixed-tag recipient patterns."""

from __future__ import annotations

import pytest

from gateway.addresses import (
    InvalidAddress,
    normalize_address,
    normalize_domain,
    normalize_recipient,
    recipient_matches,
)


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("Alice@Example.ORG", "alice@example.org"),
        ("  alice@example.org\t", "alice@example.org"),
        ('"alice"@example.org', "alice@example.org"),
        ("Ålice@exämple.org", "ålice@exämple.org"),
    ],
)
def test_address_is_stored_stripped_and_lowercased(given: str, stored: str) -> None:
    assert normalize_address(given) == stored


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ("alice", "exactly one @"),
        ("alice@b@example.org", "exactly one @"),
        ("@example.org", "not of the form"),
        ("alice@", "not of the form"),
        ("al ice@example.org", "white space"),
        ("alice\x00@example.org", "control"),
        ("alice..smith@example.org", "not a valid mailbox"),
        ("alice@-example.org", "not a valid domain"),
        ("a" * 65 + "@example.org", "64 octets"),
        ("ü" * 33 + "@example.org", "64 octets"),
        ("alice@" + ".".join(["d" * 63] * 4), "not a valid domain"),
    ],
)
def test_malformed_address_is_refused_saying_why(given: str, why: str) -> None:
    with pytest.raises(InvalidAddress, match=why):
        normalize_address(given)


def test_address_of_more_than_254_octets_is_refused() -> None:
    domain = ".".join(["d" * 60] * 4) + ".org"
    assert len(normalize_address("abcdef@" + domain)) == 254
    with pytest.raises(InvalidAddress, match="254 octets"):
        normalize_address("abcdefg@" + domain)


def test_domain_loses_case_and_trailing_dot() -> None:
    assert normalize_domain(" Chem.Example.AC.UK. ") == "chem.example.ac.uk"
    with pytest.raises(InvalidAddress):
        normalize_domain("chem..example")


def test_recipient_is_an_address_or_a_whole_domain() -> None:
    assert normalize_recipient("List@Lists.Example.NET") == "list@lists.example.net"
    assert normalize_recipient("*@Lists.Example.NET") == "*@lists.example.net"
    with pytest.raises(InvalidAddress):
        normalize_recipient("*@")
    with pytest.raises(InvalidAddress):
        normalize_recipient("*@not a domain")


def test_domain_pattern_matches_every_address_of_that_domain_only() -> None:
    assert recipient_matches("*@lists.example.net", "any@lists.example.net")
    assert not recipient_matches("*@lists.example.net", "any@sub.lists.example.net")
    assert not recipient_matches("*@lists.example.net", "any@example.net")
    assert recipient_matches("list@example.net", "list@example.net")
    assert not recipient_matches("list@example.net", "other@example.net")
