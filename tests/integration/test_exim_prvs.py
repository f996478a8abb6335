"""BATV interoperability, proven against the real Exim binary in both directions.

Exim signs (`${prvs}`), we verify; we sign, Exim verifies (`${prvscheck}` in -be, and in a real
RCPT ACL under -bh, where Exim lowercases $local_part as it does in production).
"""

from __future__ import annotations

import time

import pytest

from signed_sender import Key, Keyring, Reason, sign_prvs, verify_prvs

SECRETS = ["exim-batv-secret-0001", "AnotherSecretWith32CharactersXYZ", "s3cr3t.with-dots_and-dash"]
ADDRESSES = ["alice@example.ac.uk", "bob.smith@dept.example.ac.uk", "x-y+z@lists.example.org"]
CASES = [(secret, key, address) for secret in SECRETS for key in (0, 3, 9) for address in ADDRESSES[:2]] + [
    (SECRETS[0], 5, ADDRESSES[2])
]


def same_day(action):  # type: ignore[no-untyped-def]
    """Run `action(now)` so that Exim and we agree on the day even if midnight strikes in between."""
    for _ in range(2):
        before = time.time()
        result = action(before)
        if int(before) // 86400 == int(time.time()) // 86400:
            return result
    raise AssertionError("the day changed twice during one check")


def ring(secret: str, key: int) -> Keyring:
    return Keyring([Key(key, secret.encode())], key)


@pytest.mark.parametrize(("secret", "key", "address"), CASES)
def test_exim_signs_we_verify(exim, secret: str, key: int, address: str) -> None:  # type: ignore[no-untyped-def]
    def check(now: float) -> tuple[str, str]:
        signed = exim.expand(f"${{prvs{{{address}}}{{{secret}}}{{{key}}}}}")
        return signed, sign_prvs(address, ring(secret, key), now)

    from_exim, ours = same_day(check)
    assert from_exim == ours  # byte-compatible
    verdict = verify_prvs(from_exim, ring(secret, key), time.time())
    assert verdict.ok and verdict.address == address and verdict.key_id == key
    assert verify_prvs(from_exim.upper(), ring(secret, key), time.time()).ok  # case-folded copy
    assert verify_prvs(from_exim, ring("some-other-secret-value", key), time.time()).reason is Reason.BAD_MAC


@pytest.mark.parametrize(("secret", "key", "address"), CASES)
def test_we_sign_exim_verifies(exim, secret: str, key: int, address: str) -> None:  # type: ignore[no-untyped-def]
    signed = sign_prvs(address, ring(secret, key), time.time())
    expr = (
        f"${{prvscheck{{{signed}}}{{{secret}}}}}|$prvscheck_result|"
        f"${{prvscheck{{${{lc:{signed.upper()}}}}}{{{secret}}}{{ok}}}}|$prvscheck_result"
    )
    assert exim.expand(expr) == f"{address}|1|ok|1"
    wrong = exim.expand(f"${{prvscheck{{{signed}}}{{wrong-secret-value}}}}|$prvscheck_result")
    assert wrong == f"{address}|"


def test_exim_acl_accepts_our_signed_bounce_recipient_and_rejects_forgeries(exim) -> None:  # type: ignore[no-untyped-def]
    secret = SECRETS[1]
    config = f"""
domainlist local_domains = example.ac.uk
acl_smtp_rcpt = acl_check_rcpt
begin acl
acl_check_rcpt:
  accept senders = :
         condition = ${{if and{{{{!eq{{${{prvscheck{{$local_part@$domain}}{{{secret}}}}}}}{{}}}}\\
                                 {{eq{{$prvscheck_result}}{{1}}}}}}}}
  deny   message = bounce to an unsigned or forged address
"""
    signed = sign_prvs("alice@example.ac.uk", ring(secret, 2), time.time())
    expired = sign_prvs("alice@example.ac.uk", ring(secret, 2), time.time() - 9 * 86400)
    forged = signed[:11] + ("0" if signed[11] != "0" else "1") + signed[12:]

    def rcpt(recipient: str) -> str:
        dialogue = f"HELO remote.example.org\r\nMAIL FROM:<>\r\nRCPT TO:<{recipient}>\r\nQUIT\r\n"
        output = exim.run(["-bh", "192.0.2.25"], input=dialogue, config_text=config).stdout
        replies = [line for line in output.splitlines() if line[:3].isdigit() and not line.startswith("220")]
        return replies[2][:3]  # HELO, MAIL, RCPT

    assert rcpt(signed) == "250"
    assert rcpt(signed.upper()) == "250"  # MTAs fold case: Exim lowercases $local_part
    assert rcpt(forged) == "550"
    assert rcpt(expired) == "550"
    assert rcpt("alice@example.ac.uk") == "550"
