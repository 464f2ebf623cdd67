"""Sealing secrets: keys derived from strings, old keys, contexts, tampering."""

from __future__ import annotations

import pytest

from conveyor.crypto import SecretKeyMissing, SecretUnreadable, Vault, is_sealed

A = "a" * 32 + "-first-key"
B = "b" * 32 + "-second-key"


def test_a_sealed_value_opens_with_its_key_and_context_only() -> None:
    vault = Vault(A)
    sealed = vault.seal("smtp-password", "tenant-1:smtp")
    assert is_sealed(sealed)
    assert "smtp-password" not in sealed
    assert vault.seal("smtp-password", "tenant-1:smtp") != sealed  # a fresh nonce each time
    assert vault.open(sealed, "tenant-1:smtp") == "smtp-password"
    # Moved to another tenant's row or another field, it does not open.
    for context in ("tenant-2:smtp", "tenant-1:push"):
        with pytest.raises(SecretUnreadable):
            vault.open(sealed, context)


def test_tampering_is_detected() -> None:
    vault = Vault(A)
    sealed = vault.seal("x" * 40, "c")
    flipped = sealed[:-3] + ("A" if sealed[-3] != "A" else "B") + sealed[-2:]
    with pytest.raises(SecretUnreadable):
        vault.open(flipped, "c")
    with pytest.raises(SecretUnreadable):
        vault.open(sealed[: len(sealed) // 2], "c")


def test_old_keys_open_and_rotation_reseals_under_the_current_one() -> None:
    before = Vault(A).seal("token", "c")
    after_change = Vault(B, [A])
    assert after_change.open(before, "c") == "token"
    assert after_change.needs_reseal(before)
    resealed = after_change.reseal(before, "c")
    assert not after_change.needs_reseal(resealed)
    assert Vault(B).open(resealed, "c") == "token"  # the old key is no longer needed
    with pytest.raises(SecretUnreadable, match="CONVEYOR_SECRET_KEYS_OLD"):
        Vault(B).open(before, "c")


def test_without_a_key_nothing_is_sealed_and_sealed_values_do_not_open() -> None:
    sealed = Vault(A).seal("token", "c")
    empty = Vault(None)
    assert not empty.can_seal
    with pytest.raises(SecretKeyMissing, match="CONVEYOR_SECRET_KEY"):
        empty.seal("token", "c")
    with pytest.raises(SecretKeyMissing):
        empty.open(sealed, "c")
    # Values stored in clear before sealing existed read as they are, and need sealing.
    assert empty.open("plain", "c") == "plain"
    assert Vault(A).needs_reseal("plain")
    assert not empty.needs_reseal("plain")


def test_keys_must_be_long_enough() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        Vault("short")
    with pytest.raises(ValueError, match="at least 32"):
        Vault(A, ["short"])
