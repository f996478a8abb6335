"""How remote MTAs' address verification names itself: probe senders and made-up test addresses.

Pure functions of a lowercased local part, for the adapters that answer remote verification
(`callout_responder`). What the real MTAs send was observed in tests/integration/test_callout_remote_mta.py.
"""

from __future__ import annotations

import re
from collections.abc import Collection

#: The time stamp Postfix's `address_verify_sender_ttl` appends to the probe sender's local part,
#: with no delimiter (`double-bounceJQZ3@`): base 31 in digits and consonants, at most 13 of them
#: for a 64-bit epoch count (Postfix src/global/verify_sender_addr.c).
POSTFIX_PROBE_STAMP = re.compile(r"[0-9b-df-hj-np-tv-z]{1,13}")

#: Exim's default `callout_random_local_part`, `$primary_hostname-$tod_epoch-testing`.
EXIM_RANDOM_LOCAL_PART = re.compile(r"[a-z0-9][a-z0-9.-]*-[0-9]{9,}-testing")


def is_probe_sender(local_part: str, probe_senders: Collection[str]) -> bool:
    """Whether a sender's local part is an address-verification probe's, with Postfix's time stamp or not."""
    if local_part in probe_senders:
        return True
    return any(
        local_part.startswith(probe) and POSTFIX_PROBE_STAMP.fullmatch(local_part[len(probe) :]) is not None
        for probe in probe_senders
    )


def is_random_test_address(local_part: str) -> bool:
    """Whether a recipient's local part is the made-up one of Exim's `callout=random` check.

    Exim asks for it first and, if it is accepted, takes the domain to accept every address and
    skips the real check (Exim specification, "Additional parameters for callouts", `random`).
    """
    return EXIM_RANDOM_LOCAL_PART.fullmatch(local_part) is not None
