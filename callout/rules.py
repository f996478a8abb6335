"""Build the decision rules from the configuration and the key file, once, at start."""

from __future__ import annotations

from gateway.config import Config
from signed_sender import Keyring

from .decision import Rules


def rules_from(config: Config, keyring: Keyring) -> Rules:
    verification = config.verification
    policy = config.signing.policy()
    return Rules(
        keyring=keyring,
        policy=policy,
        probe_senders=frozenset(s.lower() for s in verification.probe_senders),
        bounce_like_senders=frozenset(s.lower() for s in verification.bounce_like_senders),
        delimiters=verification.recipient_delimiters or policy.separator,
        submission_service=verification.submission_service,
        warning_header=verification.warning_header,
    )
