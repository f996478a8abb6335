"""Fuzzing the address code: whatever arrives in an envelope, parsing refuses it with MalformedAddress
and verification answers with a Verdict; nothing else ever escapes (design invariant 2).

The inputs mix arbitrary Unicode (with the lone surrogates that `surrogateescape` makes of octets
that are not UTF-8, as the policy parser does) with the pieces addresses are made of: `@`, quotes,
source routes, `%` and `!`, tag-shaped suffixes and BATV `prvs=` prefixes, so that the fuzzer also
reaches the code behind the first syntax check.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signed_sender import (
    Key,
    Keyring,
    MalformedAddress,
    Policy,
    Purpose,
    SigningError,
    Verdict,
    parse_mailbox,
    sign,
    sign_prvs,
    strip_tag,
    verify,
)

NOW = 1_790_000_000
RING = Keyring([Key(0, b"k" * 32), Key(1, b"j" * 32)], 0)
POLICIES = st.sampled_from([Policy(), Policy(separator="+"), Policy(accept_prvs=False)])
FUZZ = settings(max_examples=300, deadline=500, suppress_health_check=[HealthCheck.too_slow])

PIECES = [
    "@", "@@", ".", "..", '"', "\\", "%", "!", ":", ",", "<", ">", "[", "]", " ", "\t", "\r\n", "\0", "=", "+",
    "alice", "ALICE", "example.ac.uk", "other.org", "[192.0.2.1]", "@relay:", "prvs=", "PRVS=", "0123abcdef",
    "=sa", "=fa", "=ha", "=SAAAAAAAAAAAAAAA", "=sbphbilfcoscok4y", "srs0=", "\udc80", "\udcff", "é", "ß", "\u200b",
    "x" * 64, "y" * 250,
]
address_like = st.lists(
    st.one_of(st.sampled_from(PIECES), st.text(max_size=12), st.characters(codec="utf-8")), max_size=12
).map("".join)
anything = st.one_of(address_like, st.text(max_size=300), st.text(alphabet=st.characters(), max_size=80))


@FUZZ
@given(anything)
def test_parse_mailbox_raises_nothing_but_malformed_address(text: str) -> None:
    try:
        mailbox = parse_mailbox(text)
    except MalformedAddress:
        return
    assert text.endswith(mailbox.domain) and "@" not in mailbox.domain


@FUZZ
@given(anything, POLICIES, st.sampled_from(list(Purpose)), st.integers(min_value=0, max_value=2**33))
def test_verify_always_returns_a_verdict(text: str, policy: Policy, purpose: Purpose, now: int) -> None:
    verdict = verify(text, RING, now, policy, purpose)
    assert isinstance(verdict, Verdict)
    if verdict.ok:  # only a genuine tag verifies, and a fuzzer cannot forge a 50-bit MAC
        raise AssertionError(f"fuzzed input {text!r} verified: {verdict}")


@FUZZ
@given(anything, POLICIES)
def test_strip_tag_raises_nothing_but_malformed_address(text: str, policy: Policy) -> None:
    try:
        stripped = strip_tag(text, policy)
    except MalformedAddress:
        return
    assert "@" in stripped


@FUZZ
@given(anything, POLICIES)
def test_sign_refuses_with_a_signing_error_or_returns_an_address_that_verifies(text: str, policy: Policy) -> None:
    try:
        signed = sign(text, RING, NOW, policy)
    except SigningError:
        return
    verdict = verify(signed, RING, NOW, policy)
    assert verdict.ok, (text, signed, verdict)
    assert verdict.address.lower() == strip_tag(signed, policy).lower()


@FUZZ
@given(anything)
def test_prvs_sign_refuses_or_verifies(text: str) -> None:
    try:
        signed = sign_prvs(text, RING, NOW)
    except SigningError:
        return
    assert verify(signed, RING, NOW).ok


def test_an_address_too_long_once_signed_is_refused_not_emitted() -> None:
    """A 64-octet local part fits, but not with a tag; a long domain fits, but not the whole signed path."""
    from signed_sender import SignedTooLong, sign_prvs

    long_domain = ".".join(["d" * 60] * 4)  # 243 octets: a valid domain name
    for address in (f"{'y' * 60}@example.org", f"alice@{long_domain}"):
        for signer in (lambda a: sign(a, RING, NOW), lambda a: sign_prvs(a, RING, NOW)):
            try:
                signer(address)
            except SignedTooLong:
                continue
            raise AssertionError(f"{address} was signed although the result is too long")


def _reference_dot_atom(text: str) -> bool:
    """The character-by-character rule the regular expressions in signed_sender.address replaced."""
    from signed_sender.address import _is_atom_char

    return bool(text) and all(atom and all(_is_atom_char(ch) for ch in atom) for atom in text.split("."))


def _reference_domain(text: str) -> bool:
    if not text or len(text) > 253:
        return False
    return all(
        label and len(label) <= 63 and "-" not in (label[0], label[-1]) and all(c.isalnum() or c == "-" for c in label)
        for label in text.split(".")
    )


@settings(max_examples=500, deadline=500)
@given(st.one_of(anything, st.text(alphabet="abc.-_!=9\n ", max_size=80), st.text(alphabet="a.-", min_size=60)))
def test_the_fast_syntax_checks_agree_with_the_character_rules(text: str) -> None:
    from signed_sender.address import _CONTROL_OR_SPACE, is_domain, is_dot_atom

    assert is_dot_atom(text) == _reference_dot_atom(text)
    assert is_domain(text) == _reference_domain(text)
    assert bool(_CONTROL_OR_SPACE.search(text)) == any(ord(c) < 0x20 or ord(c) == 0x7F or c.isspace() for c in text)
