"""Mailbox syntax as far as signing needs it (RFC 5321 section 4.1.2, RFC 6531 for UTF-8).

Signing edits the local part, so it must know exactly where the local part ends and how long it
is in octets. Anything unusual (quoted strings that are not plain atoms, source routes, several
`@`, control characters) is refused rather than guessed at: an address we cannot parse with
certainty is an address we must not sign or vouch for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import MalformedAddress

#: RFC 5321 section 4.5.3.1.1: a local part is at most 64 octets.
MAX_LOCAL_PART_OCTETS = 64
#: RFC 5321 section 4.5.3.1.3 limits a path to 256 octets including the angle brackets.
MAX_ADDRESS_OCTETS = 254

# RFC 5322 section 3.2.3 atext, without the dot which separates atoms.
_ATEXT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~")
# The same rules as regular expressions, for the ASCII addresses nearly every request carries: a
# character-by-character check in Python cost a third of a verification (issue 7).
_ASCII_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+(?:\.[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+)*")
_ASCII_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ASCII_DOMAIN = re.compile(rf"{_ASCII_LABEL}(?:\.{_ASCII_LABEL})*")
# str.isspace() and re's \s agree: both are Unicode white space.
_CONTROL_OR_SPACE = re.compile(r"[\x00-\x1f\x7f]|\s")


def _is_atom_char(ch: str) -> bool:
    # RFC 6531 section 3.3: UTF8-non-ascii is allowed in atoms when SMTPUTF8 is in use.
    return ch in _ATEXT or (ord(ch) > 0x7F and ch.isprintable())


def is_dot_atom(text: str) -> bool:
    """True if `text` is an RFC 5322 dot-atom (no leading, trailing or doubled dots)."""
    if not text:
        return False
    if text.isascii():
        return _ASCII_DOT_ATOM.fullmatch(text) is not None
    return all(atom and all(_is_atom_char(ch) for ch in atom) for atom in text.split("."))


def is_domain(text: str) -> bool:
    """RFC 5321 section 4.1.2 Domain (letters, digits, hyphens per label), or a UTF-8 U-label."""
    if not text or len(text) > 253:
        return False
    if text.isascii():
        return _ASCII_DOMAIN.fullmatch(text) is not None
    for label in text.split("."):
        if not label or len(label) > 63 or label[0] == "-" or label[-1] == "-":
            return False
        if not all(ch.isalnum() or ch == "-" for ch in label):
            return False
    return True


def octets(text: str) -> int:
    """Length as it travels over SMTP (UTF-8), which is what the 64-octet limit counts."""
    return len(text.encode("utf-8", "surrogatepass"))


@dataclass(frozen=True, slots=True)
class Mailbox:
    """A parsed `local@domain`. The local part is unquoted: `"alice"@x` and `alice@x` are equal."""

    local: str
    domain: str

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"

    def lower(self) -> Mailbox:
        return Mailbox(self.local.lower(), self.domain.lower())


def _unquote(local: str) -> str:
    """Resolve an RFC 5321 quoted-string local part when it is equivalent to a plain dot-atom.

    A quoted local part that needs its quotes (spaces, `@`, backslashes) is refused: such an
    address is never one we issue, and accepting it is how percent-hacks and smuggled
    routing reach an MTA.
    """
    if len(local) >= 2 and local[0] == '"' and local[-1] == '"':
        inner = local[1:-1]
        if is_dot_atom(inner):
            return inner
        raise MalformedAddress(f"quoted local part {local!r} is not a plain mailbox name")
    return local


def parse_mailbox(address: str) -> Mailbox:
    """Split an address at its one `@`, refusing anything we would not issue ourselves."""
    if not isinstance(address, str) or not address:
        raise MalformedAddress("empty address")
    if _CONTROL_OR_SPACE.search(address):
        raise MalformedAddress("address contains white space or control characters")
    if address.startswith("@") and ":" in address:
        raise MalformedAddress("source routes (@host:user@domain) are not accepted")
    local, sep, domain = address.rpartition("@")
    if not sep or not local or not domain:
        raise MalformedAddress(f"{address!r} is not of the form local-part@domain")
    local = _unquote(local)
    if not is_dot_atom(local):
        raise MalformedAddress(f"local part {local!r} is not a valid mailbox name")
    if not is_domain(domain):
        raise MalformedAddress(f"domain {domain!r} is not a valid domain name")
    return Mailbox(local, domain)
