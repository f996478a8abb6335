"""MAIL and RCPT parameters: which ones we accept from the client, and which we pass upstream.

The proxy is a hop, so the client's extensions must survive it: SIZE (RFC 1870), BODY (8BITMIME,
RFC 6152), SMTPUTF8 (RFC 6531) and DSN (RFC 3461: RET and ENVID on MAIL, NOTIFY and ORCPT on RCPT).
aiosmtpd's own MAIL and RCPT upper-case every parameter (ENVID and ORCPT are case-sensitive) and
refuse all RCPT parameters, so the proxy parses them here. A parameter goes upstream only if the
upstream advertised its extension in EHLO (RFC 5321 section 4.1.4: a client must not use an
extension the server did not offer). Two cannot simply be dropped when the upstream lacks them:
8-bit data without 8BITMIME and an SMTPUTF8 message without SMTPUTF8 would be damaged on the way,
so those fail with RFC 3463 X.6.3 and X.6.7. DSN requests are dropped, as RFC 3461 section 4.3
lets a relay to a non-DSN server do. AUTH= (RFC 4954 section 5) is accepted and not forwarded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: RFC 3461 section 4: xtext, printable ASCII without "+" and "=" or "+" and two upper-case hex digits.
_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})*")
#: RFC 6533 section 3: with addr-type utf-8 the address may be UTF-8 as well.
_UTF8_XTEXT = re.compile(r"(?:[!-*,-<>-~\u0080-\U0010ffff]|\+[0-9A-F]{2}|\\x\{[0-9A-F]{2,6}\})*")
_NOTIFY = {"SUCCESS", "FAILURE", "DELAY"}


class ParamError(ValueError):
    """A parameter the client may not send; `reply` is the SMTP reply for it."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


@dataclass(frozen=True)
class MailParams:
    size: int | None = None
    body: str | None = None  # "7BIT" or "8BITMIME"
    smtputf8: bool = False
    ret: str | None = None  # "FULL" or "HDRS"
    envid: str | None = None


@dataclass(frozen=True)
class RcptParams:
    notify: tuple[str, ...] | None = None  # ("NEVER",) or some of SUCCESS, FAILURE, DELAY
    orcpt: str | None = None  # "addr-type;xtext" as the client sent it


def _split(words: list[str]) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for word in words:
        keyword, eq, value = word.partition("=")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", keyword) or (eq and not value):
            raise ParamError(f"501 5.5.4 Malformed parameter {word[:40]!r}")
        if keyword.upper() in params:
            raise ParamError(f"501 5.5.4 Parameter {keyword.upper()} given twice")
        params[keyword.upper()] = value if eq else None
    return params


def parse_mail(words: list[str], max_size: int) -> MailParams:
    """The MAIL FROM parameters; ParamError for anything malformed, unknown or too big."""
    params = _split(words)
    size = params.pop("SIZE", None)
    if size is not None and not (size.isdigit() and len(size) <= 20):
        raise ParamError("501 5.5.4 SIZE must be a number of octets")
    if size is not None and int(size) > max_size:
        raise ParamError(f"552 5.3.4 Message size exceeds the limit of {max_size} octets")
    body = params.pop("BODY", None)
    if body is not None and body.upper() not in ("7BIT", "8BITMIME"):
        raise ParamError("501 5.5.4 BODY must be 7BIT or 8BITMIME")
    smtputf8 = "SMTPUTF8" in params
    if params.pop("SMTPUTF8", None) is not None:
        raise ParamError("501 5.5.4 SMTPUTF8 takes no value")
    ret = params.pop("RET", None)
    if ret is not None and ret.upper() not in ("FULL", "HDRS"):
        raise ParamError("501 5.5.4 RET must be FULL or HDRS")
    envid = params.pop("ENVID", None)
    if envid is not None and (len(envid) > 100 or not _XTEXT.fullmatch(envid)):
        raise ParamError("501 5.5.4 ENVID must be xtext of at most 100 characters (RFC 3461 section 4.4)")
    params.pop("AUTH", None)
    if params:
        raise ParamError(f"555 5.5.4 Unsupported MAIL parameter {next(iter(params))}")
    return MailParams(
        size=int(size) if size is not None else None,
        body=body.upper() if body else None,
        smtputf8=smtputf8,
        ret=ret.upper() if ret else None,
        envid=envid,
    )


def parse_rcpt(words: list[str]) -> RcptParams:
    """The RCPT TO parameters; ParamError for anything malformed or unknown."""
    params = _split(words)
    notify_value = params.pop("NOTIFY", None)
    notify = None
    if notify_value is not None:
        notify = tuple(v.upper() for v in notify_value.split(","))
        if not (notify == ("NEVER",) or (set(notify) <= _NOTIFY and len(set(notify)) == len(notify))):
            raise ParamError("501 5.5.4 NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY")
    orcpt = params.pop("ORCPT", None)
    if orcpt is not None:
        addr_type, semi, address = orcpt.partition(";")
        pattern = _UTF8_XTEXT if addr_type.lower() == "utf-8" else _XTEXT
        if not (semi and re.fullmatch(r"[A-Za-z0-9-]+", addr_type) and address and pattern.fullmatch(address)):
            raise ParamError("501 5.5.4 ORCPT must be addr-type;xtext (RFC 3461 section 4.2)")
        if len(orcpt) > 500:
            raise ParamError("501 5.5.4 ORCPT is too long")
    if params:
        raise ParamError(f"555 5.5.4 Unsupported RCPT parameter {next(iter(params))}")
    return RcptParams(notify=notify, orcpt=orcpt)


def mail_arguments(params: MailParams, extensions: dict[str, str]) -> list[str]:
    """The parameters for the upstream's MAIL FROM; ParamError if the upstream cannot carry this message."""
    args = []
    if params.size is not None and "SIZE" in extensions:
        args.append(f"SIZE={params.size}")
    if params.body is not None:
        if "8BITMIME" in extensions:
            args.append(f"BODY={params.body}")
        elif params.body == "8BITMIME":
            raise ParamError("554 5.6.3 The next hop cannot take 8-bit mail (no 8BITMIME); try later")
    if params.smtputf8:
        if "SMTPUTF8" not in extensions:
            raise ParamError("553 5.6.7 The next hop cannot take internationalised mail (no SMTPUTF8)")
        args.append("SMTPUTF8")
    if "DSN" in extensions:
        if params.ret:
            args.append(f"RET={params.ret}")
        if params.envid:
            args.append(f"ENVID={params.envid}")
    return args


def rcpt_arguments(params: RcptParams, extensions: dict[str, str]) -> list[str]:
    args = []
    if "DSN" in extensions:
        if params.notify:
            args.append("NOTIFY=" + ",".join(params.notify))
        if params.orcpt:
            args.append(f"ORCPT={params.orcpt}")
    return args
