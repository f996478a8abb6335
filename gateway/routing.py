"""Old mail-routing syntax: the mailbox an MTA may deliver an odd-looking address to.

An address of ours that is not literally a protected user's can still reach one: a forger who
sends as `alice%example.ac.uk@example.ac.uk` gets bounces delivered to alice if the MTA applies the
percent hack, and then the bounce check, keyed on the literal address, would let them through.
So before calling such an address "not protected", `callout.decision.decide` asks where it could
lead; and the submission proxy (`gateway.submission.plan.address_syntax`) refuses any address
that could lead somewhere other than where it says, so that what it checks is what is delivered:

- text after the first white space or control character is not part of the address (an MTA
  reads a CR LF as the end of the command: `alice@example.ac.uk\\r\\nRCPT TO:<x>`), except a space
  inside a whole quoted local part (`"alice=x y"@example.ac.uk` is alice's mailbox, by delimiter);
- a source route `@relay,@relay2:user@domain` is ignored, as RFC 5321 section 4.1.1.3 tells
  receivers to do;
- a quoted local part is taken without its quotes and escapes (Postfix `resolve_dequoted_address`
  routes `"user@domain"@relay` as `user@domain@relay`);
- a local part that is itself an address (`alice@other.org@example.ac.uk`) routes to it;
- the percent hack `user%domain@relay` routes to `user@domain` (RFC 1123 section 5.2.16; Postfix
  `allow_percent_hack`), and a bang path `site!user@relay` to `user@site` (Postfix `swap_bangpath`).

Each step gives one more candidate; `decide` refuses the address if any candidate belongs to a
protected user. No real sender needs these forms for a protected user's address.
"""

from __future__ import annotations

import re

#: Enough for every nesting a real MTA would unwrap; bounds the work on hostile input.
MAX_STEPS = 6
_SPACE_OR_CONTROL = re.compile(r"[\x00-\x20\x7f\s]")


def _unescape(quoted: str) -> str:
    return re.sub(r"\\(.)", r"\1", quoted)


def _dequote(local: str) -> str:
    if len(local) >= 2 and local[0] == '"' and local[-1] == '"':
        return _unescape(local[1:-1])
    return local


#: `"local part"@domain`: RFC 5321 quoted-string (space allowed, no controls), a domain with no
#: white space or controls. Its space is part of the mailbox, not the end of the address.
_QUOTED_LOCAL = re.compile(r'"((?:[^"\\\x00-\x1f\x7f]|\\[^\x00-\x1f\x7f])*)"@([^\x00-\x20\x7f\s]+)')


def _step(address: str) -> str | None:
    """One unwrapping, or None when the address has none of the syntax above."""
    quoted = _QUOTED_LOCAL.fullmatch(address)
    if quoted is not None:  # Postfix routes `"alice=x y"@site` as alice=x y@site: to alice (delimiter)
        return f"{_unescape(quoted[1])}@{quoted[2]}"
    cut = _SPACE_OR_CONTROL.search(address)
    if cut is not None and cut.start() > 0:
        return address[: cut.start()]
    local, at, domain = address.rpartition("@")
    if not at:
        return None
    if local.startswith("@") and ":" in local:
        return f"{local.rpartition(':')[2]}@{domain}"
    unquoted = _dequote(local)
    if "@" in unquoted:
        return unquoted
    if "%" in unquoted:
        user, _, site = unquoted.rpartition("%")
        return f"{user}@{site}"
    if "!" in unquoted:
        site, _, user = unquoted.partition("!")
        return f"{user}@{site}"
    return f"{unquoted}@{domain}" if unquoted != local else None


def routing_targets(address: str) -> list[str]:
    """The addresses an MTA might deliver `address` to, outermost first; empty for a plain address."""
    found: list[str] = []
    current = address
    for _ in range(MAX_STEPS):
        target = _step(current)
        if not target or target == current or target in found:
            break
        found.append(target)
        current = target
    return found
