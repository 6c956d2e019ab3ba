"""Attestation access codes: how a student lets an employer see their remaining hours.

A student hands an access code to a prospective employer, who can then look up the student's
remaining student-job hours. Each student gets one new code per calendar month ("new month,
new code"); a code is valid from the first day of the month it was issued in, for a number of
calendar months (three by default), so an employer can keep checking for a quarter.

Codes are 16 characters from an alphabet without look-alikes (no 0/O, no 1/I/L), printed in
four groups of four such as ``ABCD-EFGH-JKMN-PQRS``. That is about 79 bits of randomness, far
beyond what an online guesser can try.

Storage must survive a database leak without exposing usable codes while still letting the
student see their current code again. So the service keeps two things per code:

* a keyed look-up digest (HMAC-SHA256 of the normalized code), used as the index when an
  employer presents a code; without the key it reveals nothing and cannot be brute-forced;
* the code sealed with AES-256-GCM, which only the service can open to show it to its owner.

Both keys are derived from one configured secret with HKDF under distinct labels, so neither
key can stand in for the other.

Everything here is pure: no I/O and no clock. Dates are parameters, and randomness comes from
``secrets`` unless the caller injects a byte source (which tests do, for determinism).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "CODE_ALPHABET",
    "CODE_BITS",
    "CODE_GROUP_SIZE",
    "CODE_LENGTH",
    "DEFAULT_VALIDITY_MONTHS",
    "KEY_LENGTH",
    "MIN_SECRET_LENGTH",
    "AccessCodeKeys",
    "CodeMint",
    "add_months",
    "code_validity",
    "derive_keys",
    "digests_equal",
    "format_code",
    "generate_code",
    "is_code_valid_on",
    "lookup_digest",
    "month_start",
    "needs_new_code",
    "normalize_code",
    "seal_code",
    "unseal_code",
]

CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
"""Characters a code may contain: digits and capitals minus 0, 1, I, L and O."""

CODE_LENGTH = 16
CODE_GROUP_SIZE = 4
CODE_BITS = CODE_LENGTH * math.log2(len(CODE_ALPHABET))
"""Entropy of a uniformly drawn code in bits (about 79.3)."""

DEFAULT_VALIDITY_MONTHS = 3

KEY_LENGTH = 32
"""Length in bytes of each derived key (AES-256 needs exactly 32)."""

MIN_SECRET_LENGTH = 32
"""Shortest configured secret accepted by ``derive_keys``, in bytes."""

_ALPHABET_SET = frozenset(CODE_ALPHABET)

# Bytes at or above this value are rejected while drawing characters, so that byte % 31 is
# uniform over the alphabet instead of favouring its first few characters.
_BYTE_LIMIT = 256 - 256 % len(CODE_ALPHABET)

# Bytes requested per draw: only 1 in 32 is rejected, so one draw nearly always suffices.
_DRAW_SIZE = 2 * CODE_LENGTH
_MAX_DRAWS = 64

_NONCE_LENGTH = 12
_TAG_LENGTH = 16

_HKDF_LOOKUP_INFO = b"studentwork/access-code/lookup-digest/v1"
_HKDF_SEAL_INFO = b"studentwork/access-code/seal/v1"
# Binds every sealed blob to this purpose, so a ciphertext made with the same key for something
# else can never be passed off as an access code.
_SEAL_AAD_PREFIX = b"studentwork/access-code/v1\x00"


# --------------------------------------------------------------------------------------------
# Calendar
# --------------------------------------------------------------------------------------------


def month_start(d: date) -> date:
    """Return the first day of the month containing ``d``."""
    return d.replace(day=1)


def add_months(d: date, n: int) -> date:
    """Return the first day of the month ``n`` months after ``d`` (``n`` may be negative).

    ``d`` must itself be a first of the month: adding months to other days is ambiguous
    (what is 31 January plus one month?), so this refuses rather than guess. Pass
    ``month_start(d)`` when starting from an arbitrary date.
    """
    if d.day != 1:
        raise ValueError(f"add_months needs the first day of a month, got {d.isoformat()}")
    index = d.year * 12 + (d.month - 1) + n
    year, month0 = divmod(index, 12)
    return date(year, month0 + 1, 1)


def _check_months(months: int) -> None:
    if months < 1:
        raise ValueError(f"a code must stay valid for at least one month, got {months}")


def code_validity(issued: date, months: int = DEFAULT_VALIDITY_MONTHS) -> tuple[date, date]:
    """Return the first and last day (both inclusive) on which a code is valid.

    ``issued`` is any day of the month the code was issued in; the code is valid from the first
    of that month for ``months`` whole calendar months. A code issued in November 2026 is valid
    from 2026-11-01 up to and including 2027-01-31.
    """
    _check_months(months)
    valid_from = month_start(issued)
    valid_until = add_months(valid_from, months) - timedelta(days=1)
    return valid_from, valid_until


def is_code_valid_on(issued_month: date, on: date, months: int = DEFAULT_VALIDITY_MONTHS) -> bool:
    """Tell whether a code issued in the month of ``issued_month`` is valid on day ``on``.

    Valid iff ``month_start(issued_month) <= on < add_months(month_start(issued_month),
    months)``. Any day of the issue month may be passed as ``issued_month``.
    """
    _check_months(months)
    start = month_start(issued_month)
    return start <= on < add_months(start, months)


def needs_new_code(last_issued: date | None, today: date) -> bool:
    """Tell whether a student must get a new code: none yet, or the last is from an older month.

    Implements "new month, new code": a code is issued at most once per calendar month, and
    the first request in a new month gets a fresh one even while older codes remain valid.
    """
    return last_issued is None or month_start(last_issued) < month_start(today)


# --------------------------------------------------------------------------------------------
# Code text
# --------------------------------------------------------------------------------------------


# Drawing characters with one C-level ``bytes.translate``: a byte below ``_BYTE_LIMIT``
# becomes ``CODE_ALPHABET[byte % 31]``, the others are deleted (the rejection above).
_DRAW_TABLE = bytes(
    ord(CODE_ALPHABET[b % len(CODE_ALPHABET)]) if b < _BYTE_LIMIT else 0 for b in range(256)
)
_REJECTED_BYTES = bytes(range(_BYTE_LIMIT, 256))


def _draw_chars(chunk: bytes) -> bytes:
    """The code characters (ASCII) that the bytes of ``chunk`` give, in order."""
    return chunk.translate(_DRAW_TABLE, _REJECTED_BYTES)


def generate_code(*, random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """Draw a new access code and return it normalized (16 characters, no dashes).

    Each character is drawn uniformly from ``CODE_ALPHABET`` using bytes from ``random_bytes``
    (``secrets.token_bytes`` by default; tests inject a deterministic source). Use
    ``format_code`` to print it in groups.
    """
    drawn = b""
    for _ in range(_MAX_DRAWS):
        chunk = random_bytes(_DRAW_SIZE)
        if len(chunk) != _DRAW_SIZE:
            raise ValueError(
                f"random_bytes({_DRAW_SIZE}) returned {len(chunk)} bytes instead of {_DRAW_SIZE}"
            )
        drawn += _draw_chars(chunk)
        if len(drawn) >= CODE_LENGTH:
            return drawn[:CODE_LENGTH].decode("ascii")
    # A healthy source gets here with a probability far below 2**-1000; a source stuck on
    # high bytes would otherwise loop forever.
    raise RuntimeError("random byte source keeps returning unusable bytes")


def normalize_code(s: str) -> str:
    """Return the canonical form of a typed access code: 16 capitals/digits, no separators.

    Accepts lowercase and any spaces or dashes between characters. Characters outside the
    alphabet, including the look-alikes 0, 1, I, L and O, are rejected rather than guessed at:
    since they never occur in a code, an input containing them was mistyped or is not a code.

    Raises ``ValueError`` with the reason.
    """
    compact = "".join(ch for ch in s.upper() if ch != "-" and not ch.isspace())
    foreign = sorted({ch for ch in compact if ch not in _ALPHABET_SET})
    if foreign:
        shown = ", ".join(repr(ch) for ch in foreign)
        raise ValueError(
            f"access code contains characters that never occur in a code: {shown} "
            "(codes use digits 2-9 and letters without I, L and O)"
        )
    if len(compact) != CODE_LENGTH:
        raise ValueError(
            f"access code must have {CODE_LENGTH} characters (dashes and spaces aside), "
            f"got {len(compact)}"
        )
    return compact


def format_code(normalized: str) -> str:
    """Return a code in its printed form, four groups of four joined by dashes.

    The input is normalized first, so any accepted form works; raises ``ValueError`` if it is
    not a code.
    """
    code = normalize_code(normalized)
    return "-".join(code[i : i + CODE_GROUP_SIZE] for i in range(0, CODE_LENGTH, CODE_GROUP_SIZE))


# --------------------------------------------------------------------------------------------
# Keys, look-up digest and sealing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccessCodeKeys:
    """The two keys protecting stored codes; derive them with ``derive_keys``.

    ``lookup`` keys the HMAC index, ``seal`` keys AES-256-GCM. They are left out of ``repr`` so
    that logging the object cannot leak them.
    """

    lookup: bytes = field(repr=False)
    seal: bytes = field(repr=False)


def _hkdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_LENGTH, salt=None, info=info).derive(secret)


def derive_keys(secret: bytes) -> AccessCodeKeys:
    """Derive the look-up and sealing keys from the one configured secret with HKDF-SHA256.

    Distinct HKDF labels make the keys independent, so compromising how one is used tells
    nothing about the other. The secret must be at least ``MIN_SECRET_LENGTH`` (32) bytes of
    high-entropy material, e.g. ``secrets.token_bytes(32)``.
    """
    if len(secret) < MIN_SECRET_LENGTH:
        raise ValueError(
            f"access code secret must be at least {MIN_SECRET_LENGTH} bytes, got {len(secret)}"
        )
    return AccessCodeKeys(
        lookup=_hkdf(secret, _HKDF_LOOKUP_INFO),
        seal=_hkdf(secret, _HKDF_SEAL_INFO),
    )


def _check_key(key: bytes, purpose: str) -> None:
    if len(key) != KEY_LENGTH:
        raise ValueError(f"{purpose} key must be {KEY_LENGTH} bytes, got {len(key)}")


def lookup_digest(code: str, key: bytes) -> bytes:
    """Return HMAC-SHA256(key, normalized code), the index under which a code is stored.

    The code is normalized first, so the printed and the typed form give the same digest.
    Raises ``ValueError`` if ``code`` is not a valid code or ``key`` is not 32 bytes.
    """
    _check_key(key, "look-up")
    return hmac.new(key, normalize_code(code).encode("ascii"), hashlib.sha256).digest()


def digests_equal(a: bytes, b: bytes) -> bool:
    """Compare two digests in constant time, so timing does not reveal how much matched."""
    return hmac.compare_digest(a, b)


def _seal_aad(context: bytes) -> bytes:
    return _SEAL_AAD_PREFIX + context


def seal_code(code: str, key: bytes, *, context: bytes = b"") -> bytes:
    """Encrypt a code for storage: a random 12-byte nonce followed by the AES-256-GCM output.

    ``context`` is authenticated but not stored; passing e.g. the owner's row id binds the
    sealed code to that row, so it cannot be copied onto another student. The same context must
    be given to ``unseal_code``. Raises ``ValueError`` for an invalid code or key.
    """
    _check_key(key, "seal")
    nonce = secrets.token_bytes(_NONCE_LENGTH)
    plaintext = normalize_code(code).encode("ascii")
    return nonce + AESGCM(key).encrypt(nonce, plaintext, _seal_aad(context))


def unseal_code(sealed: bytes, key: bytes, *, context: bytes = b"") -> str:
    """Decrypt a code sealed by ``seal_code`` and return it normalized.

    Raises ``ValueError`` if the blob is truncated, was altered, or was sealed under another key
    or context.
    """
    _check_key(key, "seal")
    if len(sealed) < _NONCE_LENGTH + _TAG_LENGTH:
        raise ValueError("sealed access code is too short to be genuine")
    nonce, ciphertext = sealed[:_NONCE_LENGTH], sealed[_NONCE_LENGTH:]
    try:
        plaintext = AESGCM(key).decrypt(nonce, ciphertext, _seal_aad(context))
    except InvalidTag:
        raise ValueError(
            "sealed access code failed authentication: wrong key or context, or tampered data"
        ) from None
    return normalize_code(plaintext.decode("ascii"))


# --------------------------------------------------------------------------------------------
# Many codes at once (the monthly rotation)
# --------------------------------------------------------------------------------------------


class CodeMint:
    """Mints codes in bulk: for each context a fresh code's look-up digest and sealed form.

    Exactly what ``generate_code``, ``lookup_digest`` and ``seal_code`` give one by one (same
    character draw, same HMAC-SHA256 digest, a fresh random 96-bit nonce per sealed code,
    same blob format and associated data), with what they pay per code paid once instead:
    the keys are checked and keyed once (an HMAC object copied per code, one ``AESGCM``),
    and the random bytes of a whole batch come from one call. The plain codes never leave
    this object, so nothing that stores the result can leak them.
    """

    def __init__(self, keys: AccessCodeKeys) -> None:
        _check_key(keys.lookup, "look-up")
        _check_key(keys.seal, "seal")
        self._lookup = hmac.new(keys.lookup, digestmod=hashlib.sha256)
        self._aead = AESGCM(keys.seal)

    def mint(
        self,
        contexts: Sequence[bytes],
        *,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> tuple[list[bytes], list[bytes]]:
        """New codes, one per sealing context: their digests and sealed forms, in order.

        ``random_bytes`` draws the codes' characters (tests inject a deterministic source);
        the nonces always come from ``secrets``, as in ``seal_code``.
        """
        n = len(contexts)
        pool = random_bytes(_DRAW_SIZE * n)
        if len(pool) != _DRAW_SIZE * n:
            raise ValueError(f"random_bytes({_DRAW_SIZE * n}) returned {len(pool)} bytes")
        nonces = secrets.token_bytes(_NONCE_LENGTH * n)
        lookup, encrypt = self._lookup, self._aead.encrypt
        digests: list[bytes] = []
        sealed: list[bytes] = []
        for i, context in enumerate(contexts):
            code = _draw_chars(pool[i * _DRAW_SIZE : (i + 1) * _DRAW_SIZE])[:CODE_LENGTH]
            if len(code) < CODE_LENGTH:  # over half of the draw rejected: below 2**-56
                code = generate_code(random_bytes=random_bytes).encode("ascii")
            mac = lookup.copy()
            mac.update(code)
            digests.append(mac.digest())
            nonce = nonces[i * _NONCE_LENGTH : (i + 1) * _NONCE_LENGTH]
            sealed.append(nonce + encrypt(nonce, code, _seal_aad(context)))
        return digests, sealed
