"""Signed envelope senders: sign and verify addresses, with no I/O, no clock and no configuration.

The caller passes keys and the time, as dkimpy's callers pass DNS: everything here is a pure
function, so every rule can be tested without a socket or a sleep.
"""

from .address import Mailbox, parse_mailbox
from .errors import AlreadyTagged, KeyringError, MalformedAddress, SignedTooLong, SigningError
from .keys import Key, Keyring
from .native import DEFAULT_POLICY, Policy, Purpose, sign, sign_fixed, sign_header, strip_tag, verify
from .prvs import sign_prvs, verify_prvs
from .verdict import Reason, TagKind, Verdict

__all__ = [
    "DEFAULT_POLICY",
    "AlreadyTagged",
    "Key",
    "Keyring",
    "KeyringError",
    "Mailbox",
    "MalformedAddress",
    "Policy",
    "Purpose",
    "Reason",
    "SignedTooLong",
    "SigningError",
    "TagKind",
    "Verdict",
    "parse_mailbox",
    "sign",
    "sign_fixed",
    "sign_header",
    "sign_prvs",
    "strip_tag",
    "verify",
    "verify_prvs",
]
