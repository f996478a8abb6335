"""The requests the benchmarks send: the same list to our service and to the baseline it is compared with.

The policy mix is what an MX of a site with forgery protection sees (the shares are printed with
the results): mostly mail from other sites, some of our own signed senders, forgeries of protected
users, and bounces, genuine or collateral spam, plus leaked (blacklisted) tags.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from signed_sender import Keyring, Policy, sign

from .client import policy_request
from .store import DOMAIN, BenchStore, add_leaked, address, mode

#: (share in percent, kind); kinds are explained in `policy_mix`.
POLICY_MIX = (
    (40, "foreign sender"),
    (20, "signed sender"),
    (15, "forged sender"),
    (10, "bounce to signed"),
    (10, "bounce to unsigned"),
    (5, "blacklisted sender"),
)


@dataclass(frozen=True)
class Workload:
    policy: list[str]  # whole policy requests (text)
    policy_kinds: Counter[str]
    sign_keys: list[str]  # envelope senders to sign
    callout_recipients: list[str]


def _protected(users: int, k: int) -> int:
    """The k-th user in full mode (mode() makes every 20th user off and the next one testing)."""
    i = (k * 7919) % users
    while mode(i) != "full":
        i = (i + 1) % users
    return i


def build(store: BenchStore, distinct: int = 20_000, now: float | None = None) -> Workload:
    now = time.time() if now is None else now
    policy = Policy()
    keyring: Keyring = store.keyring()
    leaked = add_leaked(store, [_protected(store.users, k) for k in range(200)], now, policy)
    requests: list[str] = []
    kinds: Counter[str] = Counter()
    cycle = [kind for share, kind in POLICY_MIX for _ in range(share)]
    for n in range(distinct):
        kind = cycle[n % len(cycle)]
        user = address(_protected(store.users, n))
        client = f"198.51.100.{n % 250 + 1}"
        if kind == "foreign sender":
            sender, recipient = f"someone{n}@site{n % 500}.example.net", user
        elif kind == "signed sender":
            sender, recipient = sign(user, keyring, now, policy), f"friend{n}@site{n % 500}.example.net"
        elif kind == "forged sender":
            sender, recipient = user, f"victim{n}@site{n % 500}.example.net"
        elif kind == "bounce to signed":
            sender, recipient = "", sign(user, keyring, now, policy)
        elif kind == "bounce to unsigned":
            sender, recipient = "", user
        else:
            sender, recipient = leaked[n % len(leaked)], f"victim{n}@site{n % 500}.example.net"
        kinds[kind] += 1
        requests.append(policy_request(sender, recipient, client, f"{n:x}"))
    sign_keys = [address(_protected(store.users, k)) for k in range(distinct)]
    callouts = []
    for n in range(distinct):
        user = address(_protected(store.users, n))
        callouts.append(sign(user, keyring, now, policy) if n % 2 == 0 else user)  # valid, then forged
    return Workload(requests, kinds, sign_keys, callouts)


__all__ = ["DOMAIN", "POLICY_MIX", "Workload", "build"]
