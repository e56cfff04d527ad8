"""The ``/v2`` OpenAPI document (``gateway/openapi-v2.yaml``) against the live REST API of a real
cluster.

The gateway serves the document; it is valid OpenAPI and documents exactly the routes served;
live answers of a whole workflow (deploy, create, get, search, activate, complete, publish,
topology) validate against it; and schemathesis sends generated valid and invalid requests to
every operation and finds no 5xx and nothing undocumented.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import hypothesis
import openapi_spec_validator
import pytest
import pytest_asyncio
import schemathesis
import yaml
from openapi_schema_validator import OAS30Validator, oas30_format_checker

import gateway
from gateway.client import BrokerClient
from gateway.rest import OPENAPI_PATH, rest_app
from tests.conftest import DEMO_BPMN
from zeebe_sim.harness import RunningCluster, eventually, running_cluster

pytestmark = pytest.mark.slow

SPEC_FILE = Path(gateway.__file__).with_name("openapi-v2.yaml")
DOCUMENT: dict[str, Any] = yaml.safe_load(SPEC_FILE.read_text(encoding="utf-8"))


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = DOCUMENT
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def assert_documented(
    template: str, method: str, status: int, content_type: str | None, body: Any
) -> None:
    """The answer is one the document promises: a documented status, its media type, and a
    body valid against its schema (formats checked too)."""
    responses = DOCUMENT["paths"][template][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {template}: {status} is not documented"
    content = _resolve(responses[str(status)]).get("content")
    if content is None:
        assert body is None, body
        return
    assert content_type is not None
    media_type = content_type.split(";")[0].strip()
    assert media_type in content, f"{method} {template} {status}: undocumented {content_type}"
    schema = {**content[media_type]["schema"], "components": DOCUMENT["components"]}
    OAS30Validator(schema, format_checker=oas30_format_checker).validate(body)


def test_the_document_is_valid_and_documents_exactly_the_served_routes() -> None:
    """openapi-spec-validator accepts it, and the routes the REST app registers (the
    document's own route aside) are exactly its operations."""
    openapi_spec_validator.validate(DOCUMENT)
    app = rest_app(BrokerClient([]))
    routed = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    } - {("GET", OPENAPI_PATH)}
    documented = {
        (method.upper(), template)
        for template, item in DOCUMENT["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }
    assert routed == documented


async def call(
    cluster: RunningCluster,
    template: str,
    method: str,
    path: str,
    body: Any = None,
    form: bytes | None = None,
) -> tuple[int, Any]:
    """Call the live API and check the answer against the document; (status, body)."""
    kwargs: dict[str, Any] = {}
    if form is not None:
        kwargs["data"] = {"resources": io.BytesIO(form)}
    elif body is not None:
        kwargs["json"] = body
    async with cluster.api.session.request(method, cluster.rest_url + path, **kwargs) as response:
        text = await response.text()
        answer = await response.json(content_type=None) if text else None
        assert_documented(
            template, method, response.status, response.headers.get("Content-Type"), answer
        )
        return response.status, answer


async def test_a_workflow_answers_as_documented(tmp_path: Path) -> None:
    """Topology, deploy, create, get, search, activate, complete, publish and the 4xx on the
    way: every answer validates against the document."""
    async with running_cluster(tmp_path, brokers=1, partitions=2) as cluster:
        url = cluster.rest_url + OPENAPI_PATH
        async with cluster.api.session.get(url) as response:
            assert response.status == 200 and response.content_type == "application/yaml"
            assert await response.read() == SPEC_FILE.read_bytes()
        await call(cluster, "/v2/topology", "GET", "/v2/topology")
        form = DEMO_BPMN.read_bytes()
        status, deployed = await call(
            cluster, "/v2/deployments", "POST", "/v2/deployments", form=form
        )
        assert status == 200
        key = deployed["deployments"][0]["processDefinition"]["processDefinitionKey"]
        created = []
        for body in [
            {"processDefinitionId": "demo-process", "variables": {"correlationKey": "c1"}},
            {"processDefinitionKey": key, "variables": {"correlationKey": "c2"}},
        ]:
            status, answer = await call(
                cluster, "/v2/process-instances", "POST", "/v2/process-instances", body
            )
            assert status == 200
            created.append(answer["processInstanceKey"])
        template = "/v2/process-instances/{processInstanceKey}"
        for instance in created:
            assert (await call(cluster, template, "GET", f"/v2/process-instances/{instance}"))[
                0
            ] == 200
        assert (await call(cluster, template, "GET", "/v2/process-instances/5"))[0] == 404

        search = "/v2/process-instances/search"
        status, found = await call(
            cluster,
            search,
            "POST",
            search,
            {
                "filter": {"state": {"$in": ["ACTIVE"]}},
                "sort": [{"field": "startDate", "order": "DESC"}],
                "page": {"limit": 1},
            },
        )
        assert status == 200 and found["page"]["totalItems"] == 2 and len(found["items"]) == 1
        status, rest = await call(
            cluster,
            search,
            "POST",
            search,
            {
                "sort": [{"field": "startDate", "order": "DESC"}],
                "page": {"after": found["page"]["endCursor"]},
            },
        )
        walked = [i["processInstanceKey"] for i in found["items"] + rest["items"]]
        assert len(walked) == 2 and sorted(walked) == sorted(created)
        assert (await call(cluster, search, "POST", search, {"filter": {"variables": []}}))[
            0
        ] == 400

        async def activated() -> list[dict[str, Any]] | None:
            status, answer = await call(
                cluster,
                "/v2/jobs/activation",
                "POST",
                "/v2/jobs/activation",
                {"type": "demo-task", "maxJobsToActivate": 5, "timeout": 60_000},
            )
            assert status == 200
            return answer["jobs"] if len(answer["jobs"]) == 2 else None

        jobs = await eventually(activated, timeout_s=30)
        for job in jobs:
            template = "/v2/jobs/{jobKey}/completion"
            assert (
                await call(cluster, template, "POST", f"/v2/jobs/{job['jobKey']}/completion", {})
            )[0] == 204
            assert (
                await call(cluster, template, "POST", f"/v2/jobs/{job['jobKey']}/completion", {})
            )[0] == 404
        publication = "/v2/messages/publication"
        body = {"name": "demo-message", "correlationKey": "c1", "timeToLive": 0, "messageId": "m1"}
        assert (await call(cluster, publication, "POST", publication, body))[0] == 200
        body["timeToLive"] = 60_000
        body["messageId"] = "m2"
        assert (await call(cluster, publication, "POST", publication, body))[0] == 200
        assert (await call(cluster, publication, "POST", publication, body))[0] == 409

        async def completed() -> bool:
            _, instance = await call(
                cluster,
                "/v2/process-instances/{processInstanceKey}",
                "GET",
                f"/v2/process-instances/{created[0]}",
            )
            return bool(instance["state"] == "COMPLETED" and instance["endDate"])

        await eventually(completed, timeout_s=30)


# -- schemathesis: generated input for every operation --------------------------------------------

# Valid-looking input that only the engine can judge (a BPMN's content, a process id or key
# that exists, a cursor's meaning) is answered 400 or 404; everything else must be accepted.
ENGINE_JUDGES = ["2xx", "400", "404", "409"]
SCHEMATHESIS = schemathesis.Config.from_dict(
    {
        "seed": 20_261_129,
        "suppress-health-check": ["too_slow", "filter_too_much"],
        "generation": {
            "mode": "all",
            "max-examples": 10,
            "deterministic": True,
            "database": "none",
        },
        "checks": {
            "positive_data_acceptance": {"expected-statuses": ENGINE_JUDGES},
            # Invalid input is refused with a 4xx; a body over its limit is a 413, never a 5xx.
            "negative_data_rejection": {
                "expected-statuses": ["400", "404", "405", "409", "413", "415"]
            },
        },
    }
)
schema = schemathesis.openapi.from_path(SPEC_FILE, config=SCHEMATHESIS)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fuzzed_cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """One cluster for every generated request, with the demo process deployed."""
    async with running_cluster(
        tmp_path_factory.mktemp("fuzzed"), brokers=1, partitions=2
    ) as cluster:
        await cluster.api.deploy(DEMO_BPMN)
        yield cluster.rest_url


@schema.parametrize()
@hypothesis.settings(deadline=None)  # every example is a network round trip
def test_generated_requests_get_documented_responses(
    case: schemathesis.Case, fuzzed_cluster: str
) -> None:
    """Examples, coverage and fuzzing, valid and invalid: every answer has a documented
    status, media type and body; invalid input is refused with a 4xx; nothing is a 5xx."""
    if case.operation.label == "POST /v2/jobs/activation" and isinstance(case.body, dict):
        # Long polling holds an activation for its requestTimeout (10 s when 0 or absent) and
        # generated job types have no jobs: a valid 200 ms keeps the run short (a value out of
        # the int64 range stays, it is the invalid input under test).
        timeout = case.body.get("requestTimeout", 0)
        if type(timeout) is int and (timeout == 0 or 200 < timeout < 2**63):
            case.body["requestTimeout"] = 200
    case.call_and_validate(base_url=fuzzed_cluster)
