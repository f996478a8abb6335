"""Signed envelope senders made this hour, handed out again: shared by the MTA sign maps
(`callout.signing`) and the submission proxy (`gateway.submission.plan`)."""

from __future__ import annotations

from signed_sender import Key, Keyring, Policy, sign
from signed_sender.native import HOUR


class SignedCache:
    """Signed addresses already made this hour, to be handed out again instead of made again.

    A tag carries the hour, not the second (signed_sender.native: TIME_CHARS), so `sign` gives
    the same address for the same sender, key and hour: the cache returns exactly what signing
    would, and a busy sender is signed once an hour instead of once a message (the HMAC and the
    encoding were nearly half of a socketmap sign request and a twentieth of the proxy's time per
    message, issue 7). Only the signing is skipped: callers check who is protected, and who may send
    as whom, at every request, so an opt-out takes effect at once. A sender that cannot be signed
    raises SigningError every time, uncached. The cache is emptied when the hour, the key or the
    policy changes, and when it is full.
    """

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._signed: dict[str, str] = {}
        self._hour = -1
        self._key: Key | None = None
        self._policy: Policy | None = None

    def sign(self, address: str, keyring: Keyring, now: float, policy: Policy) -> str:
        hour, key = int(now) // HOUR, keyring.current
        if hour != self._hour or key is not self._key or policy is not self._policy or len(self._signed) >= self.size:
            self._signed.clear()
            self._hour, self._key, self._policy = hour, key, policy
        signed = self._signed.get(address)
        if signed is None:
            signed = self._signed[address] = sign(address, keyring, now, policy)
        return signed
