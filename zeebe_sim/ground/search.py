"""Searching items (e.g. process instance summaries) by conditions, sorted, a page at a time.

Shared by brokers and the gateway: each partition leader answers a search over its own items
with the first ``limit`` matches in sort order; the gateway merges the partitions' answers with
the same order and cuts the page. Both sides must agree on the order, so it lives here.

Items are plain maps keyed by field name. Conditions are ``[field, operator, operand]`` with
the operators of Camunda's advanced filters (``eq``, ``neq``, ``in``, ``notIn``, ``exists``,
``gt``, ``gte``, ``lt``, ``lte``); the sort is ``[field, descending]`` pairs whose last field is
unique (the key), so that a cursor (the sort values of an item) names one position.
Missing values (None) sort last in either direction, as Elasticsearch does by default.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from zeebe_sim.ground.errors import InvalidArgument

Item = dict[str, Any]


def _holds(value: Any, operator: str, operand: Any) -> bool:
    if operator == "eq":
        return bool(value == operand)
    if operator == "neq":
        return bool(value != operand)
    if operator == "in":
        return bool(value in operand)
    if operator == "notIn":
        return bool(value not in operand)
    if operator == "exists":
        return bool((value is not None) == operand)
    if value is None:
        return False
    if operator == "gt":
        return bool(value > operand)
    if operator == "gte":
        return bool(value >= operand)
    if operator == "lt":
        return bool(value < operand)
    if operator == "lte":
        return bool(value <= operand)
    raise InvalidArgument(f"Unknown search operator '{operator}'")


def matches(item: Item, conditions: Sequence[Sequence[Any]]) -> bool:
    """Whether ``item`` satisfies every condition.

    Raises InvalidArgument for an unknown operator or an operand of the wrong type.
    """
    try:
        return all(_holds(item.get(f), op, operand) for f, op, operand in conditions)
    except TypeError as exc:
        raise InvalidArgument(f"A filter value has the wrong type: {exc}") from exc


@functools.total_ordering
class _Reversed:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and bool(self.value == other.value)

    def __lt__(self, other: _Reversed) -> bool:
        return bool(other.value < self.value)

    def __hash__(self) -> int:
        return hash(self.value)


def sort_values(item: Item, sort: Sequence[Sequence[Any]]) -> list[Any]:
    """The values a cursor holds for ``item``: one per sort field."""
    return [item.get(f) for f, _ in sort]


def sort_key(sort: Sequence[Sequence[Any]]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """A key over sort values (see :func:`sort_values`) that orders them as ``sort`` says."""
    descending = [bool(d) for _, d in sort]

    def key(values: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(
            (1, 0) if v is None else (0, _Reversed(v) if d else v)
            for v, d in zip(values, descending, strict=True)
        )

    return key


def search(
    items: Iterable[Item],
    conditions: Sequence[Sequence[Any]],
    sort: Sequence[Sequence[Any]],
    limit: int,
    after: Sequence[Any] | None = None,
    before: Sequence[Any] | None = None,
) -> tuple[int, list[Item]]:
    """The number of items matching ``conditions``, and the page of at most ``limit`` of them
    in sort order: the first ones, the first ones after the cursor ``after``, or the last ones
    before the cursor ``before``.

    Raises InvalidArgument if a filter or cursor value cannot be compared with the items'.
    """
    key = sort_key(sort)
    try:
        found = [
            (key(sort_values(item, sort)), item) for item in items if matches(item, conditions)
        ]
        total = len(found)
        if after is not None:
            bound = key(after)
            found = [f for f in found if f[0] > bound]
        if before is not None:
            bound = key(before)
            found = [f for f in found if f[0] < bound]
        found.sort(key=lambda f: f[0])
    except (TypeError, ValueError) as exc:  # a cursor of the wrong shape or type
        raise InvalidArgument(f"The page cursor does not match this search: {exc}") from exc
    page = found[-limit:] if before is not None else found[:limit]
    return total, [item for _, item in page]
