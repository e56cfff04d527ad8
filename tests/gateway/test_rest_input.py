"""The REST input layer and the shared search order, without sockets: typed requests from JSON
(``gateway/rest_input.py``) and searching, merging and paging (``zeebe_sim/ground/search.py``)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.rest_input import (
    NESTING_DEPTH_MAX,
    ActivateJobsRequest,
    CreateInstanceRequest,
    InstanceSearchRequest,
    SortCursor,
    check_document,
    encode_cursor,
    parse_key,
    parse_object,
)
from zeebe_sim.ground.errors import InvalidArgument
from zeebe_sim.ground.search import search, sort_values


def test_a_valid_activation_request_becomes_typed_values_with_defaults() -> None:
    """Required fields are read, optional ones default as Camunda's do, unknown ones are
    ignored (Camunda ignores unknown properties)."""
    request = parse_object(
        ActivateJobsRequest,
        {"type": "t", "maxJobsToActivate": 5, "timeout": 1000, "futureField": {"x": 1}},
    )
    assert request == ActivateJobsRequest(type="t", max_jobs_to_activate=5, timeout_ms=1000)
    assert (request.worker, request.request_timeout_ms, request.fetch_variable) == ("", 0, ())


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"maxJobsToActivate": 5, "timeout": 1}, "No type provided"),
        ({"type": "", "maxJobsToActivate": 5, "timeout": 1}, "No type provided"),
        ({"type": "t", "maxJobsToActivate": 0, "timeout": 1}, "between 1 and 1000"),
        ({"type": "t", "maxJobsToActivate": True, "timeout": 1}, "must be an integer"),
        ({"type": "t", "maxJobsToActivate": 1, "timeout": 1.5}, "must be an integer"),
        ({"type": "t", "maxJobsToActivate": 1, "timeout": 2**63}, "between 1 and"),
        ({"type": 5, "maxJobsToActivate": 1, "timeout": 1}, "must be a string"),
        ({"type": "t", "maxJobsToActivate": 1, "timeout": 1, "tenantIds": ["x"]}, "multi-ten"),
        ({"type": "t", "maxJobsToActivate": 1, "timeout": 1, "withLease": True}, "not supported"),
    ],
)
def test_each_bad_activation_field_is_refused_by_name(body: dict[str, Any], message: str) -> None:
    """Each field's kind refuses what it cannot hold, with a message naming the field."""
    with pytest.raises(InvalidArgument, match=message):
        parse_object(ActivateJobsRequest, body)


def test_an_instance_is_created_by_exactly_one_of_id_or_key() -> None:
    """processDefinitionId or processDefinitionKey (a string or integer key), not both, not
    neither; unsupported options asking for something are refused, asking for nothing is not."""
    by_key = parse_object(CreateInstanceRequest, {"processDefinitionKey": "2251799813685249"})
    assert by_key.process_definition_key == 2251799813685249
    assert parse_object(CreateInstanceRequest, {"processDefinitionId": "p", "tags": []})
    for body in [{}, {"processDefinitionId": "p", "processDefinitionKey": 1}]:
        with pytest.raises(InvalidArgument, match="exactly one"):
            parse_object(CreateInstanceRequest, body)
    with pytest.raises(InvalidArgument, match="awaitCompletion"):
        parse_object(CreateInstanceRequest, {"processDefinitionId": "p", "awaitCompletion": True})


@pytest.mark.parametrize(
    "raw", ["abc", "-1", "0", "1e5", "\uff19", "18446744073709551616", 0, True, 1.0]
)
def test_keys_are_positive_int64_digits(raw: Any) -> None:
    """A key is a positive int64 as decimal digits (ASCII only) or an integer."""
    with pytest.raises(InvalidArgument):
        parse_key(raw, "jobKey")


def _nest(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"a": "\ud800"}, "unpaired surrogate"),
        ({"\udfff": 1}, "unpaired surrogate"),
        ([2**64], "64-bit"),
        ({"a": [-(2**63) - 1]}, "64-bit"),
        ({"a": float("inf")}, "too large"),
        (_nest(NESTING_DEPTH_MAX + 1), "nests deeper"),
    ],
)
def test_documents_the_wire_cannot_hold_are_refused(document: Any, message: str) -> None:
    """Lone surrogates, integers outside int64, infinite floats and excessive nesting."""
    with pytest.raises(InvalidArgument, match=message):
        check_document(document)


def test_documents_at_the_limits_pass() -> None:
    """int64's bounds, a surrogate pair (an astral character) and the deepest allowed nesting
    are all fine."""
    check_document({"max": 2**63 - 1, "min": -(2**63), "emoji": "\U0001f600"})
    check_document(_nest(NESTING_DEPTH_MAX))


def test_search_requests_refuse_filters_they_cannot_evaluate() -> None:
    """An unknown filter property or operator is refused (ignoring it would answer instances
    the client excluded); a cursor must match the sort."""
    with pytest.raises(InvalidArgument, match="variables"):
        parse_object(InstanceSearchRequest, {"filter": {"variables": []}})
    with pytest.raises(InvalidArgument, match=r"\$like"):
        parse_object(InstanceSearchRequest, {"filter": {"processDefinitionId": {"$like": "x"}}})
    cursor = encode_cursor([1, 2])  # two values: one sort field plus the key
    with pytest.raises(InvalidArgument, match="cursor"):
        parse_object(InstanceSearchRequest, {"page": {"after": cursor}})
    with pytest.raises(InvalidArgument, match="cursor"):
        SortCursor().parse("not base64 json!", "page.after")
    request = parse_object(
        InstanceSearchRequest,
        {
            "filter": {"state": {"$in": ["ACTIVE"]}, "processDefinitionKey": "5"},
            "sort": [{"field": "startDate", "order": "desc"}],
            "page": {"after": cursor, "limit": 3},
        },
    )
    assert request.filter.conditions() == [
        ["processDefinitionKey", "eq", 5],
        ["state", "in", ["ACTIVE"]],
    ]
    assert request.sort_spec() == [["startDate", True], ["processInstanceKey", False]]


ITEMS = st.lists(
    st.fixed_dictionaries(
        {
            "processInstanceKey": st.integers(1, 10**6),
            "state": st.sampled_from(["ACTIVE", "COMPLETED"]),
            "endDate": st.none() | st.integers(0, 5),
            "processDefinitionId": st.sampled_from(["a", "b", "c"]),
        }
    ),
    max_size=40,
    unique_by=lambda item: item["processInstanceKey"],
)
SORTS = st.lists(
    st.tuples(st.sampled_from(["state", "endDate", "processDefinitionId"]), st.booleans()),
    max_size=2,
    unique_by=lambda s: s[0],
)


@given(
    partitions=st.lists(ITEMS, min_size=1, max_size=3),
    sort_fields=SORTS,
    limit=st.integers(1, 7),
    state=st.none() | st.sampled_from(["ACTIVE", "COMPLETED"]),
)
def test_paging_merged_partitions_by_cursor_walks_the_sorted_matches_once(
    partitions: list[list[dict[str, Any]]],
    sort_fields: list[tuple[str, bool]],
    limit: int,
    state: str | None,
) -> None:
    """Whatever the items, sort and page size: pages cut from the merge of every partition's
    first matches after the cursor, walked to the end, are exactly all matches in the one
    sorted order (None last), each once; walking back with ``before`` gives the same pages."""
    # Keys carry their partition, so they are unique across partitions.
    partitions = [
        [{**item, "processInstanceKey": (p << 51) + item["processInstanceKey"]} for item in items]
        for p, items in enumerate(partitions, start=1)
    ]
    sort = [[f, d] for f, d in sort_fields] + [["processInstanceKey", False]]
    conditions = [["state", "eq", state]] if state is not None else []
    everything = [item for items in partitions for item in items]
    total, expected = search(everything, conditions, sort, 10**6)
    assert total == len(expected) == sum(1 for i in everything if state in (None, i["state"]))

    def page(after: Any = None, before: Any = None) -> list[dict[str, Any]]:
        answers = [search(items, conditions, sort, limit, after, before) for items in partitions]
        merged = [item for _, items in answers for item in items]
        return search(merged, [], sort, limit, after, before)[1]

    walked: list[dict[str, Any]] = []
    cursor = None
    while current := page(after=cursor):
        walked += current
        cursor = sort_values(current[-1], sort)
    assert walked == expected
    # Backwards from after the end: the same items, in pages aligned to the end.
    back: list[dict[str, Any]] = []
    if expected:
        assert page(after=sort_values(expected[-1], sort)) == []
        back = [expected[-1]]
        cursor = sort_values(expected[-1], sort)
        while current := page(before=cursor):
            assert len(current) == min(limit, len(expected) - len(back))
            back = current + back
            cursor = sort_values(current[0], sort)
    assert back == expected
