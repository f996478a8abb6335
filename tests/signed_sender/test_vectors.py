"""The published test vectors in docs/signed-address-format.md are what the code produces."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from signed_sender import (
    Key,
    Keyring,
    Purpose,
    TagKind,
    sign,
    sign_fixed,
    sign_header,
    sign_prvs,
    verify,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "signed-address-format.md"


def published_vectors() -> list[list[str]]:
    block = re.search(r"```vectors\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    assert block is not None, "the format document has lost its vectors block"
    return [line.split() for line in block[1].splitlines() if line.strip()]


def test_the_document_publishes_every_kind() -> None:
    kinds = {row[0].split(":")[0] for row in published_vectors()}
    assert kinds == {"envelope", "fixed", "header", "prvs"}


@pytest.mark.parametrize("row", published_vectors(), ids=lambda row: f"{row[0]}-{row[4]}")
def test_published_vector(row: list[str]) -> None:
    kind, key_id, secret, when, address, expected = row
    ring = Keyring([Key(int(key_id), bytes.fromhex(secret))], int(key_id))
    now = int(when)
    if kind == "envelope":
        signed = sign(address, ring, now)
    elif kind.startswith("fixed:"):
        signed = sign_fixed(address, int(kind.split(":")[1]), ring)
    elif kind == "header":
        signed = sign_header(address, ring, now)
    else:
        signed = sign_prvs(address, ring, now)
    assert signed == expected
    purpose = Purpose.HEADER if kind == "header" else Purpose.ENVELOPE
    verdict = verify(expected, ring, now, purpose=purpose)
    assert verdict.ok and verdict.address == address
    if kind.startswith("fixed:"):
        assert verdict.kind is TagKind.FIXED and verdict.fixed_id == int(kind.split(":")[1])
