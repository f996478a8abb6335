"""Authentication-Results (RFC 8601) carrying our verdict, for list servers and filters downstream.

    Authentication-Results: mail.example.ac.uk;
        x-signed-sender=pass smtp.mailfrom=alice=sapfsgh3ijfh34zz@example.ac.uk;
        spf=pass smtp.mailfrom=alice=sapfsgh3ijfh34zz@example.ac.uk

`x-signed-sender` is an extension method (RFC 8601 section 2.7.6: unregistered methods carry an
"x-" prefix). Results: `pass` (a valid tag on a protected address), `fail` (a protected address
without one: only seen in testing mode, full mode rejects), `none` (not a protected address),
`temperror` (the directory was unavailable). The property is `smtp.mailfrom` for a sender and
`smtp.rcptto` for a bounce's recipient (RFC 8601 section 2.7.2, RFC 7293).

A verdict is only worth something if nobody else can write it: copies of our authserv-id that
arrive from outside must be removed before ours is added (RFC 8601 section 5; design invariant 8).
`deploy/` shows how for Postfix and Exim; `is_ours` lets list processing find them.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .decision import Action, Decision, Role

#: (client ip, envelope sender, HELO name) -> SPF result word; injected so tests need no DNS.
SpfCheck = Callable[[str, str, str], str]

_SPF_RESULTS = frozenset({"pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"})
_UNSAFE = re.compile(r"[\s;()\"\\]")


def signed_sender_result(decision: Decision) -> str:
    if decision.action is Action.DEFER:
        return "temperror"
    if decision.reason == "valid":
        return "pass"
    if decision.action in (Action.REJECT, Action.WARN):
        return "fail"
    return "none"


def _pvalue(address: str) -> str:
    """An address as an RFC 8601 pvalue; anything that would break the header is quoted away."""
    return f'"{_UNSAFE.sub("", address)}"' if _UNSAFE.search(address) or not address else address


def header_value(authserv_id: str, decision: Decision, spf: str | None = None, mailfrom: str = "") -> str:
    """The header's value (without the `Authentication-Results:` name)."""
    prop = "smtp.rcptto" if decision.role is Role.BOUNCE_RECIPIENT else "smtp.mailfrom"
    parts = [authserv_id]
    result = signed_sender_result(decision)
    if decision.checked:
        parts.append(f"x-signed-sender={result} {prop}={_pvalue(decision.checked)}")
    else:
        parts.append(f"x-signed-sender={result}")
    if spf is not None and spf in _SPF_RESULTS:
        parts.append(f"spf={spf} smtp.mailfrom={_pvalue(mailfrom)}" if mailfrom else f"spf={spf}")
    return "; ".join(parts)


def header(authserv_id: str, decision: Decision, spf: str | None = None, mailfrom: str = "") -> str:
    return f"Authentication-Results: {header_value(authserv_id, decision, spf, mailfrom)}"


def pyspf_check(client_ip: str, sender: str, helo: str) -> str:
    """SPF through pyspf (RFC 7208); only a hint here, never a reason to accept or reject."""
    import spf

    try:
        result, _explanation = spf.check2(i=client_ip, s=sender or f"postmaster@{helo}", h=helo, timeout=5)
    except Exception:
        return "temperror"
    return str(result)


_NAME = re.compile(r"^\s*Authentication-Results\s*:", re.IGNORECASE)
_TOKEN = re.compile(r'[^\s;()"]+')


def _skip_cfws(value: str, i: int) -> int:
    """Past folding white space and (nested) comments, RFC 5322 section 3.2.2."""
    depth = 0
    while i < len(value):
        c = value[i]
        if c == "\\" and depth:
            i += 2
            continue
        if c == "(":
            depth += 1
        elif c == ")" and depth:
            depth -= 1
        elif not depth and not c.isspace():
            return i
        i += 1
    return i


def _authserv_id(value: str) -> str:
    """The authserv-id a header value claims: RFC 8601 section 2.2 makes it a `value` (RFC 2045: a
    token or a quoted-string) with CFWS around it, and readers such as the authres package accept
    both, so both must be recognised here."""
    i = _skip_cfws(value, 0)
    if value[i : i + 1] == '"':
        chars, i = [], i + 1
        while i < len(value) and value[i] != '"':
            if value[i] == "\\":
                i += 1
            chars.append(value[i : i + 1])
            i += 1
        return "".join(chars)
    match = _TOKEN.match(value, i)
    return match[0] if match else ""


def is_ours(header_line: str, authserv_id: str) -> bool:
    """True if an Authentication-Results header claims our authserv-id (and must be stripped)."""
    match = _NAME.match(header_line)
    return match is not None and _authserv_id(header_line[match.end() :]).lower() == authserv_id.lower()
