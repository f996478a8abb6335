"""The sendmail command line, as Postfix's sendmail(1) and Sendmail's sendmail(8) accept it.

Local programs (cron, mail(1), web applications, mutt) hand mail to `/usr/sbin/sendmail` with the
traditional flags; seed 003, "Satellite systems": on a Unix host message submission is "direct
invocation" of the MTA, not SMTP AUTH. The options are parsed like Postfix does, with getopt (glued
values `-falice@x`, grouped flags `-ti`, options after recipients as GNU getopt permits):

- `-t` recipients also from To:, Cc:, Bcc: (Resent-* when present); added to those given as
  arguments, as Postfix does.
- `-f sender` / `-r sender`: the envelope sender, used only if it is the user's own address.
- `-F name`: the full name for a From: header we add when the message has none.
- `-i`, `-oi`: a line with a single dot does not end the message.
- `-bm` (the default mode). Other modes (`-bs`, `-bp`, `-bv`, `-bi`, `-bd`...) and queue runs
  (`-q`) are refused: this is not an MTA.
- Accepted and ignored, because they only tune an MTA's own queue or logging: `-o<x>` (but
  `-oi`), `-O`, `-A`, `-B`, `-C`, `-L`, `-N`, `-R`, `-V`, `-X`, `-e`, `-h`, `-p`, `-c`, `-G`,
  `-I`, `-m`, `-n`, `-U`, `-v`.
"""

from __future__ import annotations

import enum
import getopt
from dataclasses import dataclass


class Sysexit(enum.IntEnum):
    """Exit statuses of sysexits.h, the sendmail interface's contract with its callers."""

    OK = 0
    USAGE = 64  # EX_USAGE: bad command line
    DATAERR = 65  # EX_DATAERR: the message itself is unusable
    NOUSER = 67  # EX_NOUSER: unknown user (the caller, or a recipient)
    UNAVAILABLE = 69  # EX_UNAVAILABLE: the upstream refused permanently
    SOFTWARE = 70  # EX_SOFTWARE: a bug
    TEMPFAIL = 75  # EX_TEMPFAIL: try again later; the caller keeps the message


class SendmailError(Exception):
    """The message was not handed on: one line for stderr and the exit status."""

    def __init__(self, status: Sysexit, message: str) -> None:
        super().__init__(message)
        self.status = status


# Postfix sendmail's getopt string; `q` is handled before getopt (its value is optional).
_OPTIONS = "A:B:C:F:GIL:N:O:R:UV:X:b:ce:f:h:imno:p:r:tv"


@dataclass(frozen=True, slots=True)
class Invocation:
    recipients: tuple[str, ...] = ()
    extract_recipients: bool = False  # -t
    sender: str | None = None  # -f / -r as given; None = not given
    full_name: str | None = None  # -F
    ignore_dots: bool = False  # -i / -oi


def parse_args(argv: list[str]) -> Invocation:
    """Parse sendmail's arguments; SendmailError(USAGE) with the offending option otherwise."""
    for arg in argv:
        if arg == "--":
            break
        if arg.startswith("-q"):
            raise SendmailError(Sysexit.USAGE, "queue runs (-q) are not supported: this command only submits mail")
    try:
        options, recipients = getopt.gnu_getopt(argv, _OPTIONS)
    except getopt.GetoptError as exc:
        usage = "usage: sendmail [-t] [-i] [-f sender] [-F name] [recipient ...]"
        raise SendmailError(Sysexit.USAGE, f"{exc}; {usage}") from None
    extract, ignore_dots = False, False
    sender: str | None = None
    full_name: str | None = None
    for option, value in options:
        if option == "-t":
            extract = True
        elif option == "-i" or (option == "-o" and value == "i"):
            ignore_dots = True
        elif option in ("-f", "-r"):
            sender = value
        elif option == "-F":
            full_name = value
        elif option == "-b" and value != "m":
            raise SendmailError(
                Sysexit.USAGE, f"mode -b{value} is not supported: this command only submits mail (-bm)"
            )
        elif option == "-I":
            raise SendmailError(Sysexit.USAGE, "-I (newaliases) is not supported: this command only submits mail")
    return Invocation(tuple(recipients), extract, sender, full_name, ignore_dots)
