"""The digest that tells a replay from a reused event id: the same bytes, by either path.

Stored digests are compared with those of messages sent again, possibly after an
upgrade, so the canonical JSON they hash is fixed: the standard library's
(``streams.messages._canonical``). orjson writes it for the messages it writes
identically (``_fast_canonical``), and must give way for every other.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from producers.simulator import generate
from streams.messages import _canonical, _fast_canonical, body_digest

DECLARATION = (
    b'{"eventId":"e-1","submittedAt":"2026-06-01T09:00:00+02:00",'
    b'"declarant":{"kind":"employer","enterpriseNumber":"0875179332"},'
    b'"employer":{"enterpriseNumber":"0875179332"},"worker":{"ssin":"98061111902"},'
    b'"dimonaIn":{"startingDate":"2026-06-02","endingDate":"2026-06-30",'
    b'"dimonaFeatures":{"jointCommissionNumber":"202","workerType":"STU"},'
    b'"plannedHoursNumber":22}}'
)


def test_a_declarations_digest_is_the_sha256_of_its_sorted_compact_json() -> None:
    canonical = (
        b'{"declarant":{"enterpriseNumber":"0875179332","kind":"employer"},'
        b'"dimonaIn":{"dimonaFeatures":{"jointCommissionNumber":"202","workerType":"STU"},'
        b'"endingDate":"2026-06-30","plannedHoursNumber":22,"startingDate":"2026-06-02"},'
        b'"employer":{"enterpriseNumber":"0875179332"},"eventId":"e-1",'
        b'"worker":{"ssin":"98061111902"}}'
    )
    assert _fast_canonical(DECLARATION) == canonical
    assert body_digest(DECLARATION) == hashlib.sha256(canonical).digest()
    # As the digest was before the fast path, by the standard library alone.
    assert body_digest(DECLARATION).hex() == (
        "43997915d0cd8396f2fec545711789269f2faaffc50c5cc3360501c9b1d64967"
    )


def test_the_simulated_years_messages_all_take_the_fast_path() -> None:
    records = list(generate(2025, 50, 3))
    assert len(records) > 300
    for record in records:
        fast = _fast_canonical(record.value)
        assert fast is not None
        assert fast == _canonical(record.value)


NESTED = b'{"a":' * 300 + b"1" + b"}" * 300


@pytest.mark.parametrize(
    ("raw", "standard"),
    [
        # Floats orjson writes in another form.
        (b'{"h":0.00001}', b'{"h":1e-05}'),
        (b'{"h":1.5e-7}', b'{"h":1.5e-07}'),
        (b'{"h":1e16}', b'{"h":1e+16}'),
        (b'{"h":[1,2.5]}', b'{"h":[1,2.5]}'),
        # Integers beyond 64 bits, which orjson reads as floats.
        (b'{"h":18446744073709551616}', b'{"h":18446744073709551616}'),
        (b'{"h":-9223372036854775809}', b'{"h":-9223372036854775809}'),
        # Characters orjson writes unescaped.
        ('{"n":"Zoë"}'.encode(), b'{"n":"Zo\\u00eb"}'),
        (b'{"n":"a\\u007fb"}', b'{"n":"a\\u007fb"}'),
        (b'{"n":"a\\u2028b"}', b'{"n":"a\\u2028b"}'),
        # What orjson will not read.
        (b'\xef\xbb\xbf{"h":1}', b'{"h":1}'),
        (b'{"h":NaN}', b'{"h":NaN}'),
        (b'{"n":"\\ud800"}', b'{"n":"\\ud800"}'),
        # What orjson will not write: nested deeper than 255.
        (NESTED, NESTED),
        # Not an object: nothing to leave out.
        (b'[{"submittedAt":1}]', b'[{"submittedAt":1}]'),
        # A string that looks like a fraction only costs the slower path.
        (b'{"note":"a,1.5 b:2e3","h":3}', b'{"h":3,"note":"a,1.5 b:2e3"}'),
    ],
)
def test_what_orjson_would_write_otherwise_is_left_to_the_standard_library(
    raw: bytes, standard: bytes
) -> None:
    assert _fast_canonical(raw) is None
    assert body_digest(raw) == hashlib.sha256(standard).digest()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(
    body=st.dictionaries(st.text(max_size=8), json_values, max_size=6),
    submitted=st.booleans(),
    ascii_only=st.booleans(),
    indent=st.sampled_from([None, 2]),
)
def test_either_path_gives_the_standard_librarys_bytes(
    body: dict[str, Any], submitted: bool, ascii_only: bool, indent: int | None
) -> None:
    if submitted:
        body = {**body, "submittedAt": "2026-06-01T09:00:00Z"}
    raw = json.dumps(body, ensure_ascii=ascii_only, indent=indent).encode()
    fast = _fast_canonical(raw)
    assert fast is None or fast == _canonical(raw)
    body.pop("submittedAt", None)
    expected = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert body_digest(raw) == hashlib.sha256(expected.encode()).digest()
