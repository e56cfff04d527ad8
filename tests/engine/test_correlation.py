"""Message partition routing, checked against values computed by Java and by Zeebe's own tests."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zeebe_sim.ground.errors import InvalidArgument
from zeebe_sim.ground.routing import (
    java_string_hash,
    subscription_hash_code,
    subscription_partition_id,
)

INT32_MIN = -(2**31)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 0),
        ("hello", 99162322),
        ("polygenelubricants", INT32_MIN),
        ("Aa", 2112),
        ("BB", 2112),
        # One UTF-16 unit: U+00E9.
        ("é", 233),
        # U+1F600 is the surrogate pair D83D DE00: 0xD83D * 31 + 0xDE00 = 1716067 + 56832.
        ("😀", 1772899),
    ],
)
def test_java_string_hash_matches_java(text: str, expected: int) -> None:
    """java_string_hash is String.hashCode: int32 wrap-around, surrogate pairs as two units."""
    assert java_string_hash(text) == expected


@pytest.mark.parametrize(
    ("key", "expected"), [("a", 97), ("b", 98), ("c", 99), ("foobar", -1268878963), ("", 0)]
)
def test_subscription_hash_code_matches_zeebe_test_vectors(key: str, expected: int) -> None:
    """The vectors of Zeebe's SubscriptionUtilTest.shouldGetSubscriptionHashCode."""
    assert subscription_hash_code(key) == expected


@pytest.mark.parametrize(
    ("key", "count", "expected"),
    [("a", 10, 8), ("b", 3, 3), ("c", 11, 1), ("foobar", 100, 64)],
)
def test_partition_matches_zeebe_test_vectors(key: str, count: int, expected: int) -> None:
    """The vectors of Zeebe's SubscriptionUtilTest.shouldGetPartitionIdForCorrelationKey.

    ("foobar", 100) needs Java's truncating remainder: -1268878963 % 100 is -63 in Java, so the
    partition is 64; Python's floor modulo would give 37 and partition 38.
    """
    assert subscription_partition_id(key, count) == expected


def test_non_ascii_keys_hash_signed_utf8_bytes_not_utf16_units() -> None:
    """Zeebe hashes the key's UTF-8 bytes as signed Java bytes, so for non-ASCII keys its hash
    differs from String.hashCode; routing follows Zeebe."""
    # "é" is UTF-8 C3 A9 -> signed -61, -87: 31 * -61 + -87 = -1978 (String.hashCode: 233).
    assert subscription_hash_code("é") == -1978
    # "€" is E2 82 AC -> -30, -126, -84: (31 * -30 - 126) * 31 - 84 = -32820.
    assert subscription_hash_code("€") == -32820
    assert java_string_hash("€") == 8364
    # Java: -1978 % 3 == -1, abs -> 1, partition 2 (floor modulo would say 3).
    assert subscription_partition_id("é", 3) == 2


def test_int32_min_hash_still_yields_a_valid_partition() -> None:
    """Math.abs is applied after %, so Integer.MIN_VALUE never reaches it."""
    assert subscription_hash_code("polygenelubricants") == INT32_MIN
    # Java: MIN_VALUE % 3 == -2 -> partition 3.
    assert subscription_partition_id("polygenelubricants", 3) == 3


def test_single_partition_takes_everything() -> None:
    """With one partition every key routes to partition 1."""
    assert {subscription_partition_id(k, 1) for k in ["", "a", "é", "polygenelubricants"]} == {1}


@pytest.mark.parametrize("count", [0, -1])
def test_partition_count_below_one_is_rejected(count: int) -> None:
    """There is no partition to route to."""
    with pytest.raises(InvalidArgument, match="at least 1"):
        subscription_partition_id("a", count)


@given(key=st.text(), count=st.integers(min_value=1, max_value=8192))
def test_partition_is_always_in_range(key: str, count: int) -> None:
    """Every key, including lone surrogates, lands on a partition in 1..count."""
    assert 1 <= subscription_partition_id(key, count) <= count


@given(key=st.text(alphabet=st.characters(max_codepoint=127)))
def test_ascii_keys_hash_like_string_hash_code(key: str) -> None:
    """For ASCII the byte hash and String.hashCode agree (what Zeebe's comment claims)."""
    assert subscription_hash_code(key) == java_string_hash(key)


@given(text=st.text())
def test_java_string_hash_matches_the_closed_form(text: str) -> None:
    """String.hashCode is sum(u[i] * 31^(n-1-i)) over UTF-16 units, reduced to a signed int32."""
    data = text.encode("utf-16-le", "surrogatepass")
    units = [int.from_bytes(data[i : i + 2], "little") for i in range(0, len(data), 2)]
    total = sum(u * 31 ** (len(units) - 1 - i) for i, u in enumerate(units)) % 2**32
    assert java_string_hash(text) == (total - 2**32 if total >= 2**31 else total)
