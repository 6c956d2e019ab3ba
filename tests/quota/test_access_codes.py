"""Tests for attestation access codes: validity window, code text, digests and sealing."""

from __future__ import annotations

import hashlib
import hmac
import math
import random
from collections.abc import Callable
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quota.access_codes import (
    CODE_ALPHABET,
    CODE_BITS,
    CODE_LENGTH,
    AccessCodeKeys,
    CodeMint,
    add_months,
    code_validity,
    derive_keys,
    digests_equal,
    format_code,
    generate_code,
    is_code_valid_on,
    lookup_digest,
    month_start,
    needs_new_code,
    normalize_code,
    seal_code,
    unseal_code,
)

SECRET = bytes(range(32))
KEYS = derive_keys(SECRET)
CODE = "ABCDEFGHJKMNPQRS"


def seeded_bytes(seed: int) -> Callable[[int], bytes]:
    rng = random.Random(seed)
    return rng.randbytes


# --- Calendar -------------------------------------------------------------------------------


def test_month_start() -> None:
    assert month_start(date(2026, 11, 26)) == date(2026, 11, 1)
    assert month_start(date(2026, 11, 1)) == date(2026, 11, 1)
    assert month_start(date(2028, 2, 29)) == date(2028, 2, 1)


@pytest.mark.parametrize(
    ("start", "n", "expected"),
    [
        (date(2026, 11, 1), 0, date(2026, 11, 1)),
        (date(2026, 11, 1), 1, date(2026, 12, 1)),
        (date(2026, 11, 1), 2, date(2027, 1, 1)),
        (date(2026, 11, 1), 3, date(2027, 2, 1)),
        (date(2026, 12, 1), 1, date(2027, 1, 1)),
        (date(2026, 1, 1), 12, date(2027, 1, 1)),
        (date(2026, 1, 1), 25, date(2028, 2, 1)),
        (date(2026, 1, 1), -1, date(2025, 12, 1)),
        (date(2026, 3, 1), -14, date(2025, 1, 1)),
    ],
)
def test_add_months(start: date, n: int, expected: date) -> None:
    assert add_months(start, n) == expected


def test_add_months_refuses_days_other_than_the_first() -> None:
    with pytest.raises(ValueError, match="first day of a month"):
        add_months(date(2026, 1, 31), 1)


@given(st.dates(min_value=date(1900, 1, 1), max_value=date(2900, 12, 31)), st.integers(-60, 60))
def test_add_months_round_trips(d: date, n: int) -> None:
    start = month_start(d)
    moved = add_months(start, n)
    assert moved.day == 1
    assert (moved.year - start.year) * 12 + moved.month - start.month == n
    assert add_months(moved, -n) == start


def test_code_issued_in_november_is_valid_until_end_of_january() -> None:
    for issued in (date(2026, 11, 1), date(2026, 11, 17), date(2026, 11, 30)):
        assert code_validity(issued) == (date(2026, 11, 1), date(2027, 1, 31))
        assert not is_code_valid_on(issued, date(2026, 10, 31))
        assert is_code_valid_on(issued, date(2026, 11, 1))  # before the issue day itself
        assert is_code_valid_on(issued, date(2026, 12, 31))
        assert is_code_valid_on(issued, date(2027, 1, 1))
        assert is_code_valid_on(issued, date(2027, 1, 31))  # last valid day
        assert not is_code_valid_on(issued, date(2027, 2, 1))  # first invalid day


def test_code_issued_in_december_wraps_the_year_until_february() -> None:
    assert code_validity(date(2026, 12, 9)) == (date(2026, 12, 1), date(2027, 2, 28))
    assert is_code_valid_on(date(2026, 12, 9), date(2027, 2, 28))
    assert not is_code_valid_on(date(2026, 12, 9), date(2027, 3, 1))
    # Leap year: February has 29 days.
    assert code_validity(date(2027, 12, 31)) == (date(2027, 12, 1), date(2028, 2, 29))
    assert is_code_valid_on(date(2027, 12, 1), date(2028, 2, 29))
    assert not is_code_valid_on(date(2027, 12, 1), date(2028, 3, 1))


def test_validity_length_is_a_parameter() -> None:
    assert code_validity(date(2026, 11, 5), months=1) == (date(2026, 11, 1), date(2026, 11, 30))
    assert code_validity(date(2026, 11, 5), months=12) == (date(2026, 11, 1), date(2027, 10, 31))
    assert is_code_valid_on(date(2026, 11, 5), date(2026, 11, 30), months=1)
    assert not is_code_valid_on(date(2026, 11, 5), date(2026, 12, 1), months=1)
    for bad in (0, -3):
        with pytest.raises(ValueError, match="at least one month"):
            code_validity(date(2026, 11, 5), months=bad)
        with pytest.raises(ValueError, match="at least one month"):
            is_code_valid_on(date(2026, 11, 5), date(2026, 11, 5), months=bad)


@given(
    st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 12, 31)),
    st.integers(-200, 200),
    st.integers(1, 24),
)
def test_validity_window_agrees_with_is_valid_on(issued: date, offset: int, months: int) -> None:
    on = date.fromordinal(month_start(issued).toordinal() + offset * 3)
    valid_from, valid_until = code_validity(issued, months)
    assert is_code_valid_on(issued, on, months) == (valid_from <= on <= valid_until)


def test_new_month_new_code() -> None:
    today = date(2026, 11, 26)
    assert needs_new_code(None, today)
    assert not needs_new_code(date(2026, 11, 1), today)
    assert not needs_new_code(date(2026, 11, 26), today)
    assert needs_new_code(date(2026, 10, 31), today)
    assert needs_new_code(date(2025, 11, 26), today)


# --- Code text ------------------------------------------------------------------------------


def test_alphabet_has_no_ambiguous_characters() -> None:
    assert len(CODE_ALPHABET) == 31
    assert len(set(CODE_ALPHABET)) == 31
    assert not set(CODE_ALPHABET) & set("01ILO")
    assert set(CODE_ALPHABET) == set("23456789ABCDEFGHJKMNPQRSTUVWXYZ")


def test_entropy_is_at_least_64_bits() -> None:
    bits = CODE_LENGTH * math.log2(len(CODE_ALPHABET))
    assert bits >= 64
    assert bits > 79
    assert math.isclose(CODE_BITS, bits)


def test_generated_code_format() -> None:
    for _ in range(50):
        code = generate_code()
        assert len(code) == CODE_LENGTH
        assert set(code) <= set(CODE_ALPHABET)
        printed = format_code(code)
        assert len(printed) == 19
        assert [len(g) for g in printed.split("-")] == [4, 4, 4, 4]
        assert printed.replace("-", "") == code


def test_generated_codes_differ() -> None:
    assert len({generate_code() for _ in range(100)}) == 100


def test_injected_byte_source_is_deterministic() -> None:
    assert generate_code(random_bytes=seeded_bytes(7)) == generate_code(
        random_bytes=seeded_bytes(7)
    )
    assert generate_code(random_bytes=seeded_bytes(7)) != generate_code(
        random_bytes=seeded_bytes(8)
    )


def test_bytes_map_to_alphabet_positions() -> None:
    assert generate_code(random_bytes=lambda n: bytes(range(n))) == CODE_ALPHABET[:16]
    # 31 and 62 wrap around to the first character.
    assert generate_code(random_bytes=lambda n: bytes([31, 62] * (n // 2))) == "2" * 16


def test_high_bytes_are_skipped_to_keep_the_draw_uniform() -> None:
    # 248 = 8 * 31 is the largest multiple of 31 that fits a byte; 248..255 would otherwise
    # make the first eight characters slightly more likely.
    draws = iter([bytes([248 + i % 8 for i in range(32)]), bytes(range(1, 33))])
    assert generate_code(random_bytes=lambda n: next(draws)) == CODE_ALPHABET[1:17]
    draws2 = iter([bytes([255, 5] * 16)])
    assert generate_code(random_bytes=lambda n: next(draws2)) == CODE_ALPHABET[5] * 16


def test_broken_byte_sources_are_refused() -> None:
    with pytest.raises(ValueError, match="returned 3 bytes"):
        generate_code(random_bytes=lambda n: b"abc")
    with pytest.raises(RuntimeError, match="unusable bytes"):
        generate_code(random_bytes=lambda n: b"\xff" * n)


@pytest.mark.parametrize(
    "typed",
    [
        "ABCD-EFGH-JKMN-PQRS",
        "abcd-efgh-jkmn-pqrs",
        "abcd efgh jkmn pqrs",
        "  AbCdEfGhJkMnPqRs ",
        "ABCD - EFGH - JKMN - PQRS",
        "ABCDEFGHJKMNPQRS",
        "A-B-C-D-E-F-G-H-J-K-M-N-P-Q-R-S",
    ],
)
def test_normalize_accepts_typed_forms(typed: str) -> None:
    assert normalize_code(typed) == CODE
    assert format_code(typed) == "ABCD-EFGH-JKMN-PQRS"


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        ("ABCD-EFGH-JKMN-PQR0", "'0'"),
        ("ABCD-EFGH-JKMN-PQRO", "'O'"),
        ("ABCD-EFGH-JKMN-PQR1", "'1'"),
        ("ABCD-EFGH-JKMN-PQRI", "'I'"),
        ("abcd-efgh-jkmn-pqrl", "'L'"),
        ("ABCD_EFGH_JKMN_PQRS", "'_'"),
        ("ABCD.EFGH.JKMN.PQRS", "'.'"),
        ("ÀBCD-EFGH-JKMN-PQRS", "'À'"),
        ("ABCD-EFGH-JKMN-PQR", "16 characters.*got 15"),
        ("ABCD-EFGH-JKMN-PQRS-T", "16 characters.*got 17"),
        ("", "got 0"),
    ],
)
def test_normalize_rejects_foreign_characters_and_wrong_length(typed: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        normalize_code(typed)
    with pytest.raises(ValueError):
        format_code(typed)


# --- Keys and digests -----------------------------------------------------------------------


def _independent_hkdf(secret: bytes, info: bytes) -> bytes:
    """RFC 5869 HKDF-SHA256 without salt, for one 32-byte block."""
    prk = hmac.new(b"\x00" * 32, secret, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def test_derive_keys_is_pinned_to_hkdf_with_fixed_labels() -> None:
    # Stored digests and sealed codes depend on these exact derivations; changing a label
    # would orphan every stored code.
    assert KEYS.lookup == _independent_hkdf(SECRET, b"studentwork/access-code/lookup-digest/v1")
    assert KEYS.seal == _independent_hkdf(SECRET, b"studentwork/access-code/seal/v1")


def test_derived_keys_are_distinct_and_secret_dependent() -> None:
    assert len(KEYS.lookup) == len(KEYS.seal) == 32
    assert KEYS.lookup != KEYS.seal
    assert derive_keys(SECRET) == KEYS
    other = derive_keys(bytes(range(1, 33)))
    assert other.lookup != KEYS.lookup
    assert other.seal != KEYS.seal


def test_derive_keys_refuses_short_secrets() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        derive_keys(b"too short")


def test_keys_are_not_shown_in_repr() -> None:
    text = repr(KEYS)
    assert KEYS.lookup.hex() not in text
    assert repr(KEYS.lookup) not in text
    assert repr(KEYS.seal) not in text
    assert text == "AccessCodeKeys()"
    assert isinstance(KEYS, AccessCodeKeys)


def test_lookup_digest_is_hmac_sha256_of_the_normalized_code() -> None:
    digest = lookup_digest(CODE, KEYS.lookup)
    assert digest == hmac.new(KEYS.lookup, CODE.encode(), hashlib.sha256).digest()
    assert len(digest) == 32
    assert lookup_digest("abcd efgh-jkmn pqrs", KEYS.lookup) == digest
    assert lookup_digest(CODE, KEYS.lookup) == digest


def test_lookup_digest_depends_on_key_and_code() -> None:
    digest = lookup_digest(CODE, KEYS.lookup)
    assert lookup_digest(CODE, KEYS.seal) != digest
    assert lookup_digest(CODE, derive_keys(b"x" * 32).lookup) != digest
    assert lookup_digest("ABCDEFGHJKMNPQRT", KEYS.lookup) != digest


def test_lookup_digest_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        lookup_digest("not a code", KEYS.lookup)
    with pytest.raises(ValueError, match="32 bytes"):
        lookup_digest(CODE, b"short key")


def test_digests_equal() -> None:
    digest = lookup_digest(CODE, KEYS.lookup)
    assert digests_equal(digest, lookup_digest(format_code(CODE), KEYS.lookup))
    assert not digests_equal(digest, lookup_digest("ABCDEFGHJKMNPQRT", KEYS.lookup))
    assert not digests_equal(digest, digest[:-1])


# --- Sealing --------------------------------------------------------------------------------


def test_seal_round_trip() -> None:
    for code in (CODE, "abcd-efgh-jkmn-pqrs", generate_code()):
        sealed = seal_code(code, KEYS.seal)
        assert unseal_code(sealed, KEYS.seal) == normalize_code(code)


def test_sealed_blob_layout_and_fresh_nonces() -> None:
    sealed = seal_code(CODE, KEYS.seal)
    # 12-byte nonce, 16 ciphertext bytes (one per character), 16-byte tag.
    assert len(sealed) == 12 + CODE_LENGTH + 16
    assert CODE.encode() not in sealed
    again = seal_code(CODE, KEYS.seal)
    assert again[:12] != sealed[:12]
    assert again != sealed


def test_tampering_is_detected_at_every_byte() -> None:
    sealed = seal_code(CODE, KEYS.seal)
    for i in range(len(sealed)):
        tampered = bytearray(sealed)
        tampered[i] ^= 0x01
        with pytest.raises(ValueError, match="failed authentication"):
            unseal_code(bytes(tampered), KEYS.seal)


def test_wrong_key_or_context_is_detected() -> None:
    sealed = seal_code(CODE, KEYS.seal, context=b"student:42")
    assert unseal_code(sealed, KEYS.seal, context=b"student:42") == CODE
    with pytest.raises(ValueError, match="failed authentication"):
        unseal_code(sealed, KEYS.seal, context=b"student:43")
    with pytest.raises(ValueError, match="failed authentication"):
        unseal_code(sealed, KEYS.seal)
    with pytest.raises(ValueError, match="failed authentication"):
        unseal_code(sealed, derive_keys(b"y" * 32).seal, context=b"student:42")


def test_truncated_or_malformed_input_is_refused() -> None:
    sealed = seal_code(CODE, KEYS.seal)
    with pytest.raises(ValueError, match="too short"):
        unseal_code(sealed[:27], KEYS.seal)
    with pytest.raises(ValueError, match="failed authentication"):
        unseal_code(sealed[:-1], KEYS.seal)
    with pytest.raises(ValueError, match="32 bytes"):
        seal_code(CODE, b"k" * 16)
    with pytest.raises(ValueError, match="32 bytes"):
        unseal_code(sealed, b"k" * 16)
    with pytest.raises(ValueError):
        seal_code("ABCD-EFGH-JKMN-PQR0", KEYS.seal)


# --- Minting in bulk (the rotation) ---------------------------------------------------------


def byte_stream(seed: int) -> Callable[[int], bytes]:
    """A deterministic source read front to back, however many bytes each call asks for."""
    data = random.Random(seed).randbytes(1 << 16)
    position = 0

    def read(n: int) -> bytes:
        nonlocal position
        chunk = data[position : position + n]
        position += n
        return chunk

    return read


def test_minted_codes_are_the_codes_generate_code_draws_from_the_same_bytes() -> None:
    contexts = [f"student:{n}".encode() for n in range(40)]
    digests, sealed = CodeMint(KEYS).mint(contexts, random_bytes=byte_stream(3))
    one_by_one = byte_stream(3)
    expected = [generate_code(random_bytes=one_by_one) for _ in contexts]
    codes = [
        unseal_code(blob, KEYS.seal, context=context)
        for blob, context in zip(sealed, contexts, strict=True)
    ]
    assert codes == expected
    assert digests == [lookup_digest(code, KEYS.lookup) for code in expected]


def test_minted_codes_are_sealed_like_seal_code_with_fresh_nonces() -> None:
    contexts = [b"student:1"] * 200
    digests, sealed = CodeMint(KEYS).mint(contexts)
    assert len(digests) == len(sealed) == 200
    assert {len(d) for d in digests} == {32}
    assert {len(blob) for blob in sealed} == {12 + CODE_LENGTH + 16}
    assert len({blob[:12] for blob in sealed}) == 200
    codes = [unseal_code(blob, KEYS.seal, context=b"student:1") for blob in sealed]
    assert len(set(codes)) == 200
    assert all(len(c) == CODE_LENGTH and set(c) <= set(CODE_ALPHABET) for c in codes)
    assert all(code.encode() not in blob for code, blob in zip(codes, sealed, strict=True))
    # Bound to its context like any sealed code.
    with pytest.raises(ValueError, match="failed authentication"):
        unseal_code(sealed[0], KEYS.seal, context=b"student:2")


def test_a_minted_draw_with_too_many_high_bytes_draws_again() -> None:
    # 17 of the 32 bytes rejected: the slice gives 15 characters, so the code is drawn anew
    # from the source as generate_code would.
    draws = iter([bytes([255] * 17 + list(range(15))), bytes(range(1, 33))])
    _, sealed = CodeMint(KEYS).mint([b"c"], random_bytes=lambda n: next(draws))
    assert unseal_code(sealed[0], KEYS.seal, context=b"c") == CODE_ALPHABET[1:17]


def test_minting_refuses_short_sources_and_bad_keys() -> None:
    with pytest.raises(ValueError, match="returned 3 bytes"):
        CodeMint(KEYS).mint([b"a", b"b"], random_bytes=lambda n: b"abc")
    with pytest.raises(ValueError, match="seal key must be 32 bytes"):
        CodeMint(AccessCodeKeys(lookup=KEYS.lookup, seal=b"k" * 16))
    with pytest.raises(ValueError, match="look-up key must be 32 bytes"):
        CodeMint(AccessCodeKeys(lookup=b"k", seal=KEYS.seal))
    assert CodeMint(KEYS).mint([]) == ([], [])
