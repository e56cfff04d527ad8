"""Client mistakes on the REST port (issue 8): each a 4xx Problem Details naming the problem,
and the cluster still processing afterwards.

One test per class of bad input, on a real 2-broker cluster (so that a deployment's
distribution to partition 2 crosses the wire in a frame). After each class, a canary deploys a
process, starts an instance on every partition and completes their jobs: no input may stop a
partition.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from gateway.rest_input import DEPLOYMENT_BYTES_MAX
from tests.scenarios.bpmn_samples import process_xml
from zeebe_sim.ground.protocol import FRAME_BYTES_MAX
from zeebe_sim.harness import RunningCluster, eventually, running_cluster

pytestmark = pytest.mark.slow

BOUNDARY = "zeebe-sim-test"


@pytest_asyncio.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[RunningCluster]:
    async with running_cluster(tmp_path, brokers=2, partitions=2) as running:
        yield running


async def send(
    cluster: RunningCluster, method: str, path: str, body: bytes, content_type: str
) -> tuple[int, dict[str, Any]]:
    """Send raw bytes; the answer must be Problem Details or JSON. Returns (status, body)."""
    async with cluster.api.session.request(
        method,
        cluster.rest_url + path,
        data=io.BytesIO(body),
        headers={"Content-Type": content_type},
    ) as response:
        answer = await response.json(content_type=None) if response.status != 204 else {}
        if response.status >= 400:
            assert response.content_type == "application/problem+json", answer
            assert set(answer) >= {"type", "title", "status", "detail", "instance"}, answer
            assert answer["status"] == response.status
            assert answer["instance"] == path
        return response.status, answer


async def refused(
    cluster: RunningCluster,
    path: str,
    body: bytes,
    content_type: str = "application/json",
    *,
    status: int = 400,
    detail: str,
) -> None:
    """The request is answered ``status`` with a Problem Details whose detail says ``detail``."""
    got, answer = await send(cluster, "POST", path, body, content_type)
    assert (got, detail in answer.get("detail", "")) == (status, True), (path, body[:80], answer)


def multipart(*parts: tuple[str, str | None, bytes]) -> bytes:
    """A well-formed multipart/form-data body of (name, filename, content) parts."""
    out = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (
            f'; filename="{filename}"' if filename is not None else ""
        )
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        out += content + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


async def canary(cluster: RunningCluster, round_: int) -> None:
    """Deploy a one-task process, start an instance on each partition, complete their jobs and
    see both instances COMPLETED: every partition still processes."""
    process_id, job_type = f"canary-{round_}", f"canary-job-{round_}"
    await cluster.api.deploy(process_xml(process_id, job_type=job_type, message=None))
    keys = {await cluster.api.create_instance(process_id) for _ in range(2)}
    assert {key >> 51 for key in keys} == {1, 2}

    async def worked() -> bool:
        for job in await cluster.api.activate_jobs(job_type):
            await cluster.api.complete_job(job["jobKey"])
        states = [(await cluster.api.get_instance(key))["state"] for key in keys]
        return states == ["COMPLETED", "COMPLETED"]

    await eventually(worked, timeout_s=30)


async def test_lone_surrogates_are_refused_wherever_they_are(cluster: RunningCluster) -> None:
    """A ``\\ud800`` escape (valid JSON, not encodable as UTF-8) in a field, in a variable, in a
    property name, or as a deployment's file name: 400 naming the unpaired surrogate."""
    await cluster.api.deploy(process_xml("p", job_type="t", message=None))
    surrogate = "unpaired surrogate"
    for path, body in [
        ("/v2/process-instances", '{"processDefinitionId": "p\\ud800"}'),
        ("/v2/process-instances", '{"processDefinitionId": "p", "variables": {"a": "\\udfff"}}'),
        ("/v2/process-instances", '{"processDefinitionId": "p", "variables": {"\\ud800": 1}}'),
        ("/v2/messages/publication", '{"name": "m", "correlationKey": "\\ud83d"}'),
        ("/v2/jobs/activation", '{"type": "\\ud800", "maxJobsToActivate": 1, "timeout": 1}'),
    ]:
        await refused(cluster, path, body.encode(), detail=surrogate)
    # A file name of bytes that are not UTF-8 (a lone surrogate's encoding): aiohttp hands it
    # over with surrogate escapes, which cannot be written anywhere.
    raw = multipart(("resources", "NAME.bpmn", b"<x/>")).replace(b"NAME", b"\xed\xa0\x80")
    await refused(cluster, "/v2/deployments", raw, MULTIPART, detail=surrogate)
    await canary(cluster, 1)


async def test_integers_outside_int64_are_refused(cluster: RunningCluster) -> None:
    """2^64 (and 2^63, and -2^63-1) in a variable, a timeout, a time to live or a key: 400
    naming the 64-bit range, never a 500 from the wire codec."""
    await cluster.api.deploy(process_xml("p", job_type="t", message=None))
    huge = 2**64
    for path, body, detail in [
        ("/v2/process-instances", {"processDefinitionId": "p", "variables": {"n": huge}}, "64-bit"),
        ("/v2/process-instances", {"processDefinitionId": "p", "variables": [-(2**63) - 1]}, "64"),
        ("/v2/jobs/activation", {"type": "t", "maxJobsToActivate": 1, "timeout": huge}, "64-bit"),
        ("/v2/jobs/activation", {"type": "t", "maxJobsToActivate": 1, "timeout": 2**63}, "64-bit"),
        ("/v2/messages/publication", {"name": "m", "timeToLive": huge}, "64-bit"),
        ("/v2/process-instances", {"processDefinitionKey": str(huge)}, "not a number"),
    ]:
        await refused(cluster, path, json.dumps(body).encode(), detail=detail)
    await refused(cluster, f"/v2/jobs/{huge}/completion", b"{}", detail="not a number")
    await refused(
        cluster,
        "/v2/process-instances",
        b'{"processDefinitionId": "p", "variables": {"f": 1e400}}',
        detail="too large",
    )
    await canary(cluster, 2)


async def test_malformed_multipart_bodies_are_refused(cluster: RunningCluster) -> None:
    """No boundary, no starting boundary, a body cut short, a part header without a colon, a
    nested multipart: 400 "malformed"; JSON sent to the multipart endpoint: 415."""
    good_part = b'Content-Disposition: form-data; name="resources"; filename="a.bpmn"\r\n\r\nx'
    for content_type, body in [
        ("multipart/form-data", multipart(("resources", "a.bpmn", b"<x/>"))),
        (MULTIPART, b"garbage"),
        (MULTIPART, b""),
        (MULTIPART, f"--{BOUNDARY}\r\n".encode() + good_part),
        (MULTIPART, f"--{BOUNDARY}\r\nContent-Disposition form-data\r\n\r\nx\r\n".encode()),
        (
            MULTIPART,
            f"--{BOUNDARY}\r\nContent-Type: multipart/mixed\r\n\r\nx\r\n"
            f"--{BOUNDARY}--\r\n".encode(),
        ),
    ]:
        status, answer = await send(cluster, "POST", "/v2/deployments", body, content_type)
        assert status == 400, (content_type, body[:60], answer)
    await refused(
        cluster, "/v2/deployments", b'{"resources": []}', status=415, detail="multipart/form-data"
    )
    await refused(
        cluster,
        "/v2/deployments",
        multipart(("other", None, b"x")),
        MULTIPART,
        detail="No resources",
    )
    await canary(cluster, 3)


async def test_unknown_or_unsupported_charsets_are_refused(cluster: RunningCluster) -> None:
    """A charset Python does not know, or one that is not a JSON encoding: 415 naming it; bytes
    that are not valid in the declared charset: 400. UTF-16 declared and used is read."""
    await cluster.api.deploy(process_xml("p", job_type="t", message=None))
    body = b'{"processDefinitionId": "p"}'
    for charset in ["bogus", "rot13", "utf-7", "base64"]:
        await refused(
            cluster,
            "/v2/process-instances",
            body,
            f"application/json; charset={charset}",
            status=415,
            detail=f"'{charset}'",
        )
    await refused(
        cluster,
        "/v2/process-instances",
        b'{"processDefinitionId": "p\xff"}',
        detail="not valid utf-8",
    )
    await refused(
        cluster, "/v2/process-instances", body, "text/plain", status=415, detail="text/plain"
    )
    status, created = await send(
        cluster,
        "POST",
        "/v2/process-instances",
        body.decode().encode("utf-16"),
        "application/json; charset=UTF-16",
    )
    assert status == 200 and created["processDefinitionId"] == "p"
    await canary(cluster, 4)


async def test_bpmn_declaring_an_undecodable_encoding_is_refused(cluster: RunningCluster) -> None:
    """A BPMN whose XML declaration names 'bogus', 'rot13', 'utf-7' or 'hex': 400 saying the
    encoding cannot be decoded; partition 1 (which parses deployments) keeps processing."""
    for encoding in ["bogus", "rot13", "utf-7", "hex", "punycode"]:
        xml = process_xml("enc", job_type="t", message=None).replace(
            b'encoding="UTF-8"', f'encoding="{encoding}"'.encode()
        )
        await refused(
            cluster,
            "/v2/deployments",
            multipart(("resources", "enc.bpmn", xml)),
            MULTIPART,
            detail="declares an XML encoding that cannot be decoded",
        )
    await canary(cluster, 5)


def _many_processes(count: int) -> bytes:
    """One BPMN file with ``count`` tiny executable processes: little XML, a large parsed
    model (every node becomes a map of nine named fields)."""
    processes = "".join(
        f'<process id="p{i}" isExecutable="true"><startEvent id="s{i}"/><endEvent id="e{i}"/>'
        f'<sequenceFlow id="f{i}" sourceRef="s{i}" targetRef="e{i}"/></process>'
        for i in range(count)
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<definitions xmlns="http://www.omg.org/spec/BPMN/20100524/MODEL" id="d" '
        f'targetNamespace="t">{processes}</definitions>'
    ).encode()


async def test_deployments_too_large_to_distribute_are_refused_up_front(
    cluster: RunningCluster,
) -> None:
    """Resources beyond DEPLOYMENT_BYTES_MAX in all: 413 naming the limit (nothing reaches a
    broker). A smaller file whose parsed processes would not fit in one distribution frame:
    400 naming FRAME_BYTES_MAX, before anything is written, so partition 2 never holds half a
    deployment and partition 1 keeps processing."""
    half = DEPLOYMENT_BYTES_MAX // 2 + 1024
    body = multipart(("resources", "a.bpmn", b" " * half), ("resources", "b.bpmn", b" " * half))
    await refused(
        cluster, "/v2/deployments", body, MULTIPART, status=413, detail=str(DEPLOYMENT_BYTES_MAX)
    )

    xml = _many_processes(12_000)
    assert len(xml) < DEPLOYMENT_BYTES_MAX
    await refused(
        cluster,
        "/v2/deployments",
        multipart(("resources", "many.bpmn", xml)),
        MULTIPART,
        detail=f"one message of at most {FRAME_BYTES_MAX} bytes",
    )
    await canary(cluster, 6)
    # Nothing of it was deployed anywhere: no instance of its processes can start.
    status, answer = await send(
        cluster,
        "POST",
        "/v2/process-instances",
        b'{"processDefinitionId": "p1"}',
        "application/json",
    )
    assert status == 404, answer


async def test_other_limits_name_themselves(cluster: RunningCluster) -> None:
    """Nesting deeper than the limit, variables whose encoding exceeds the limit, a float
    that JSON allows but msgpack cannot keep small, NaN: each a 4xx naming the problem."""
    await cluster.api.deploy(process_xml("p", job_type="t", message=None))
    deep = '{"processDefinitionId": "p", "variables": {"a": ' + "[" * 200 + "]" * 200 + "}}"
    await refused(cluster, "/v2/process-instances", deep.encode(), detail="nests deeper than")
    # 3.5 MB of JSON floats is ~8 MB of msgpack: over the variables limit, not the body limit.
    floats = "[" + ",".join(["1.5"] * 900_000) + "]"
    big = '{"processDefinitionId": "p", "variables": {"a": ' + floats + "}}"
    await refused(cluster, "/v2/process-instances", big.encode(), status=413, detail="encodes to")
    await refused(
        cluster,
        "/v2/process-instances",
        b'{"processDefinitionId": NaN}',
        detail="not a JSON number",
    )
    await canary(cluster, 7)
