"""Hypothesis over the gateway's HTTP ports: generated bodies, headers and paths for every
endpoint we serve. Whatever arrives, the answer is never a 5xx and the cluster stays whole."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.conftest import FUZZ, assert_whole
from zeebe_sim.harness import RunningCluster

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


# Integers where the edges are: int32, int64 and beyond, as JSON allows any size.
EDGE_INTS = st.sampled_from(
    [0, -1, 1, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 10**30]
)
INTS = st.one_of(EDGE_INTS, st.integers())
# Text including lone surrogates (they survive json.dumps as \udXXX escapes) and control chars.
TEXT = st.text(st.characters(exclude_categories=()), max_size=40)
SCALARS = st.one_of(st.none(), st.booleans(), INTS, st.floats(), TEXT)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=12,
)
# Keys as clients might send them: numbers, numeric strings, garbage.
KEYS = st.one_of(INTS, INTS.map(str), TEXT)


def mutated(valid: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A valid body with any of its fields replaced, dropped or joined by others, or any JSON."""
    fields = {name: st.one_of(st.just(value), JSON, st.just(...)) for name, value in valid.items()}
    body = st.fixed_dictionaries(fields).map(lambda d: {k: v for k, v in d.items() if v is not ...})
    extra = st.dictionaries(TEXT, JSON, max_size=2)
    return st.one_of(
        st.builds(lambda b, e: {**e, **b}, body, extra),
        JSON,
    )


ENDPOINTS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "POST",
        "/v2/process-instances",
        {"processDefinitionId": "demo-process", "variables": {"correlationKey": "k"}},
    ),
    ("POST", "/v2/jobs/activation", {"type": "demo-task", "maxJobsToActivate": 1, "timeout": 1}),
    (
        "POST",
        "/v2/messages/publication",
        {"name": "m", "correlationKey": "k", "timeToLive": 0, "messageId": "x", "variables": {}},
    ),
    ("POST", "/v2/jobs/{key}/completion", {"variables": {}}),
    ("POST", "/actuator/backups", {"backupId": 1}),
]


async def send(
    cluster: RunningCluster,
    method: str,
    path: str,
    *,
    data: bytes | aiohttp.FormData | None = None,
    headers: dict[str, str] | None = None,
) -> int:
    base = cluster.management_url if path.startswith("/actuator") else cluster.rest_url
    async with cluster.api.session.request(
        method, base + path, data=data, headers=headers
    ) as response:
        body = await response.read()
        assert response.status < 500, (method, path, response.status, body[:500])
        return response.status


@FUZZ
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    data=st.data(),
    key=KEYS,
)
async def test_generated_json_bodies_never_get_a_5xx(
    cluster: RunningCluster, endpoint: tuple[str, str, dict[str, Any]], data: Any, key: Any
) -> None:
    """Every endpoint's body with fields mutated to any JSON (huge ints, lone surrogates, deep
    nesting, wrong types): a 4xx or a success, never a 5xx, and the cluster stays whole."""
    method, path, valid = endpoint
    body = data.draw(mutated(valid))
    text = json.dumps(body)  # ensure_ascii: lone surrogates travel as \udXXX escapes
    await send(
        cluster,
        method,
        path.format(key=key),
        data=text.encode(),
        headers={"Content-Type": "application/json"},
    )
    await assert_whole(cluster)


CONTENT_TYPES = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "application/json; charset=bogus",
            "application/json; charset=utf-16",
            "application/json; charset=rot13",
            "application/problem+json",
            "text/plain",
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "multipart/form-data; boundary=x",
            "application/x-www-form-urlencoded",
            "",
        ]
    ),
    TEXT.filter(lambda t: t.isprintable() and t.isascii()),
)
PATHS = st.sampled_from(
    [
        ("POST", "/v2/process-instances"),
        ("POST", "/v2/jobs/activation"),
        ("POST", "/v2/messages/publication"),
        ("POST", "/v2/deployments"),
        ("POST", "/v2/jobs/1/completion"),
        ("GET", "/v2/topology"),
        ("POST", "/actuator/backups"),
        ("GET", "/actuator/backups"),
    ]
)


@FUZZ
@given(target=PATHS, content_type=CONTENT_TYPES, body=st.binary(max_size=300))
async def test_raw_bodies_with_any_content_type_never_get_a_5xx(
    cluster: RunningCluster, target: tuple[str, str], content_type: str, body: bytes
) -> None:
    """Arbitrary bytes under any Content-Type (unknown charsets, broken multipart boundaries):
    never a 5xx, and the cluster stays whole."""
    method, path = target
    await send(cluster, method, path, data=body, headers={"Content-Type": content_type})
    await assert_whole(cluster)


ENCODINGS = st.sampled_from(
    ["UTF-8", "utf-16", "bogus", "rot13", "utf-7", "latin-1", "ascii", "", "utf_8_sig", "idna"]
)


@FUZZ
@given(
    encoding=ENCODINGS,
    process_id=TEXT,
    tail=st.binary(max_size=200),
    # aiohttp (the client) refuses control characters in a header, so the name has none
    filename=st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")), max_size=40),
)
async def test_generated_deployments_never_get_a_5xx(
    cluster: RunningCluster, encoding: str, process_id: str, tail: bytes, filename: str
) -> None:
    """BPMN resources with any declared encoding, odd process ids and garbage after them: a 4xx
    or a deployment, never a 5xx, and partition 1 (which deploys) stays whole."""
    declaration = f'<?xml version="1.0" encoding="{encoding}"?>' if encoding else ""
    xml = (
        f"{declaration}<bpmn:definitions "
        'xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL">'
        f'<bpmn:process id="{process_id}" isExecutable="true">'
        '<bpmn:startEvent id="s"/></bpmn:process></bpmn:definitions>'
    )
    form = aiohttp.FormData()
    resource = xml.encode("utf-8", "surrogatepass") + tail
    form.add_field("resources", resource, filename=filename or "x.bpmn")
    await send(cluster, "POST", "/v2/deployments", data=form)
    await assert_whole(cluster)


@FUZZ
@given(
    path=st.text(st.characters(exclude_categories=("Cs",)), max_size=30),
    method=st.sampled_from(["GET", "DELETE", "PUT", "PATCH"]),
)
async def test_generated_paths_never_get_a_5xx(
    cluster: RunningCluster, path: str, method: str
) -> None:
    """Any text after the backup and instance paths, with any method: never a 5xx."""
    for prefix in ("/actuator/backups/", "/v2/process-instances/", "/actuator/backupRuntime/"):
        await send(cluster, method, prefix + quote(path, safe="*"))
    await assert_whole(cluster)
