"""Client input at the REST edge: every body parsed and validated into a typed request.

Theory of operation
-------------------
A handler never looks at raw JSON. It asks this module for a typed request
(``await json_request(request, ActivateJobsRequest)``, ``await deployment_request(request)``)
and gets a frozen attrs object whose every field has been checked, or an error that the
Problem Details middleware turns into a 4xx. Nothing a client sends can reach a broker unless it
can also be written there: the wire codec (msgpack) and the log cannot hold a lone surrogate, an
integer outside int64, or a frame over ``FRAME_BYTES_MAX``, so each of those is refused here,
before any broker call, rather than failing deep inside as a 500 (or worse, inside a partition).

Three layers, each refusing its own class of mistakes:

1. **Bytes**: the media type (JSON or ``multipart/form-data``), a declared charset we can
   decode, the body size (aiohttp's ``client_max_size`` answers 413), multipart well-formedness.
2. **Document**: :func:`check_document` walks the parsed JSON once: nesting depth, every string
   encodable as UTF-8 (no lone surrogates), every integer within int64, every float finite.
3. **Fields**: request classes declare each field's JSON name and :class:`Kind` (text, int64 in a
   range, key, variables document, nested object...) with :func:`field`; :func:`parse_object`
   reads them generically, so a rule lives in one kind, not in an ``if`` per handler.

Camunda's ``/v2`` API ignores properties it does not know; so does this layer. Properties it
knows but zeebe-sim does not implement (start instructions, awaiting completion, another
tenant) are refused by name, never silently dropped.
"""

# ruff: noqa: RUF009  (`field` below is an attrs field specifier, evaluated once on purpose)
from __future__ import annotations

import base64
import binascii
import codecs
import json
import math
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, TypeVar

import aiohttp
import attrs
import msgpack
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from gateway.errors import PayloadTooLarge, UnsupportedMediaType
from zeebe_sim.ground.errors import InvalidArgument
from zeebe_sim.ground.protocol import FRAME_BYTES_MAX

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
INT32_MAX = (1 << 31) - 1
TENANT = "<default>"

# JSON bodies: Zeebe's default max message size is 4 MiB; a command must also fit in one frame
# to a broker (8 MiB) next to its envelope, so a variables document is bounded by its encoded
# (msgpack) size, which is what travels, not by its JSON text (a float is 3 bytes of JSON and 9
# of msgpack).
JSON_BODY_BYTES_MAX = 4 * 1024 * 1024
VARIABLES_BYTES_MAX = 4 * 1024 * 1024
# Deeper documents are refused: msgpack refuses to pack beyond 511 levels, and nothing real
# nests this deep (Jackson's own default limit is 1000).
NESTING_DEPTH_MAX = 128
# One deployment resource (Zeebe: 4 MiB max message size), and the whole multipart body.
RESOURCE_BYTES_MAX = 4 * 1024 * 1024
DEPLOYMENT_BYTES_MAX = FRAME_BYTES_MAX // 2
RESOURCES_PER_DEPLOYMENT_MAX = 100
TEXT_CHARS_MAX = 32 * 1024
JOBS_TO_ACTIVATE_MAX = 1000
# Search: as Camunda's secondary storage, one page is at most 10 000 items deep.
SEARCH_WINDOW_MAX = 10_000
SEARCH_PAGE_DEFAULT = 100

# Charsets a JSON body may declare (RFC 8259 is UTF-8; Jackson also reads UTF-16 and UTF-32).
JSON_CHARSETS = frozenset(
    {"utf-8", "utf-16", "utf-16-be", "utf-16-le", "utf-32", "utf-32-be", "utf-32-le"}
    | {"ascii", "iso8859-1"}  # subsets of Unicode that clients still declare
)


# -- layer 1 and 2: bytes to a checked JSON document --------------------------------------------


def _charset(request: web.BaseRequest) -> str:
    declared = request.charset
    if declared is None:
        return "utf-8"
    try:
        name = codecs.lookup(declared).name
    except LookupError:
        name = ""
    if name not in JSON_CHARSETS:
        raise UnsupportedMediaType(
            f"Unsupported charset '{declared}' in Content-Type: a JSON body must be UTF-8 "
            "(or UTF-16/UTF-32)"
        )
    return name


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


def check_json_content_type(request: web.Request) -> None:
    """Refuse a body sent as anything but JSON; no Content-Type at all is read as JSON (curl -d
    without -H).

    Raises:
        UnsupportedMediaType: another media type (415).
    """
    if "Content-Type" in request.headers and not _is_json(request.content_type):
        raise UnsupportedMediaType(
            f"Content-Type '{request.content_type}' is not supported: send application/json"
        )


async def json_body(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    """The request's JSON object, checked by :func:`check_document`.

    An absent body is ``{}`` when ``optional`` (Camunda's bodies of e.g. job completion are
    optional). Raises InvalidArgument (400), UnsupportedMediaType (415) or aiohttp's 413.
    """
    raw = await request.read()
    if not raw and optional:
        return {}
    check_json_content_type(request)
    charset = _charset(request)
    if len(raw) > JSON_BODY_BYTES_MAX:
        raise PayloadTooLarge(
            f"The request body of {len(raw)} bytes exceeds the limit of {JSON_BODY_BYTES_MAX} bytes"
        )
    try:
        text = raw.decode(charset)
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"The request body is not valid {charset}: {exc.reason}") from exc
    try:
        body = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # bad JSON, or nested beyond the parser
        raise InvalidArgument(f"The request body is not valid JSON: {exc}") from exc
    check_document(body)
    if not isinstance(body, dict):
        raise InvalidArgument("The request body must be a JSON object")
    return body


def _no_constant(name: str) -> Any:
    raise InvalidArgument(f"The request body is not valid JSON: '{name}' is not a JSON number")


def check_document(value: Any, path: str = "$") -> None:
    """Refuse what JSON can say but the wire and the log cannot hold.

    Raises InvalidArgument naming the JSON path of the first offending value: nesting beyond
    ``NESTING_DEPTH_MAX``, a string (or property name) with a lone surrogate, an integer outside
    int64, a float that is not finite (``1e400``).
    """
    # Iterative, so that depth is checked before Python's own recursion limit is.
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if depth > NESTING_DEPTH_MAX:
            raise InvalidArgument(
                f"The request body nests deeper than {NESTING_DEPTH_MAX} levels at {where}"
            )
        if isinstance(item, str):
            check_text(item, where)
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not INT64_MIN <= item <= INT64_MAX:
                raise InvalidArgument(
                    f"The number at {where} is outside the 64-bit integer range "
                    f"[{INT64_MIN}, {INT64_MAX}]"
                )
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidArgument(f"The number at {where} is too large to represent")
        elif isinstance(item, dict):
            for key, child in item.items():
                check_text(key, f"{where} (a property name)")
                stack.append((child, f"{where}.{key}", depth + 1))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{i}]", depth + 1) for i, child in enumerate(item))


def check_text(text: str, where: str) -> None:
    """Raises InvalidArgument if ``text`` cannot be encoded as UTF-8 (a lone surrogate, from a
    ``\\ud800`` escape in JSON or an undecodable byte in a header)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument(
            f"The text at {where} contains an unpaired surrogate (U+{ord(text[exc.start]):04X}) "
            "and cannot be encoded as UTF-8"
        ) from exc


# -- layer 3: kinds and typed requests ---------------------------------------------------------


class Kind(Protocol):
    """How one field's JSON value becomes its typed value; raises InvalidArgument."""

    def parse(self, raw: Any, name: str) -> Any: ...


def _wrong_type(name: str, expected: str, raw: Any) -> InvalidArgument:
    return InvalidArgument(
        f"The value of '{name}' must be {expected}, but was {json.dumps(raw)[:100]}"
    )


@attrs.frozen
class Text:
    min_chars: int = 0
    max_chars: int = TEXT_CHARS_MAX

    def parse(self, raw: Any, name: str) -> str:
        if not isinstance(raw, str):
            raise _wrong_type(name, "a string", raw)
        if len(raw) < self.min_chars:
            raise InvalidArgument(f"No {name} provided" if not raw else f"'{name}' is too short")
        if len(raw) > self.max_chars:
            raise InvalidArgument(f"'{name}' is longer than {self.max_chars} characters")
        return raw


@attrs.frozen
class Integer:
    minimum: int = INT64_MIN
    maximum: int = INT64_MAX

    def parse(self, raw: Any, name: str) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise _wrong_type(name, "an integer", raw)
        if not self.minimum <= raw <= self.maximum:
            raise InvalidArgument(
                f"The value of '{name}' must be between {self.minimum} and {self.maximum}, "
                f"but was {raw}"
            )
        return raw


@attrs.frozen
class Flag:
    def parse(self, raw: Any, name: str) -> bool:
        if not isinstance(raw, bool):
            raise _wrong_type(name, "true or false", raw)
        return raw


@attrs.frozen
class Key:
    """A Zeebe key: Camunda answers keys as strings and accepts strings (or numbers)."""

    def parse(self, raw: Any, name: str) -> int:
        return parse_key(raw, name)


def parse_key(raw: Any, name: str) -> int:
    """A key from a path or a body: a positive int64, as a decimal string or an integer.

    Raises InvalidArgument otherwise.
    """
    if isinstance(raw, str):
        text = raw.strip() if raw.strip().isascii() else ""
        if not (text.isdigit() and len(text) <= 19):
            raise InvalidArgument(f"The provided {name} '{raw[:40]}' is not a number")
        raw = int(text)
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise _wrong_type(name, "a key (a string of digits)", raw)
    if not 0 < raw <= INT64_MAX:
        raise InvalidArgument(f"The provided {name} '{raw}' is not a positive 64-bit key")
    return raw


@attrs.frozen
class Variables:
    """A JSON object of variables, bounded by its encoded size (what travels to a broker)."""

    def parse(self, raw: Any, name: str) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise _wrong_type(name, "a JSON object", raw)
        size = len(msgpack.packb(raw, use_bin_type=True))
        if size > VARIABLES_BYTES_MAX:
            raise PayloadTooLarge(
                f"'{name}' encodes to {size} bytes, more than the limit of "
                f"{VARIABLES_BYTES_MAX} bytes"
            )
        return raw


@attrs.frozen
class OneOf:
    values: tuple[str, ...]
    case_insensitive: bool = False

    def parse(self, raw: Any, name: str) -> str:
        value = raw.upper() if self.case_insensitive and isinstance(raw, str) else raw
        if value not in self.values:
            raise InvalidArgument(
                f"The value of '{name}' must be one of {', '.join(self.values)}, but was "
                f"{json.dumps(raw)[:100]}"
            )
        return str(value)


@attrs.frozen
class ListOf:
    item: Kind
    max_items: int = 1000

    def parse(self, raw: Any, name: str) -> tuple[Any, ...]:
        if not isinstance(raw, list):
            raise _wrong_type(name, "an array", raw)
        if len(raw) > self.max_items:
            raise InvalidArgument(f"'{name}' has more than {self.max_items} items")
        return tuple(self.item.parse(item, f"{name}[{i}]") for i, item in enumerate(raw))


@attrs.frozen
class Nested:
    cls: type[Any]

    def parse(self, raw: Any, name: str) -> Any:
        if not isinstance(raw, dict):
            raise _wrong_type(name, "a JSON object", raw)
        return parse_object(self.cls, raw, f"{name}.")


@attrs.frozen
class Tenant:
    """Multi-tenancy is off, as in a default Camunda: only the default tenant exists."""

    def parse(self, raw: Any, name: str) -> str:
        if raw != TENANT:
            raise InvalidArgument(
                f"Expected to handle request with tenant identifier '{str(raw)[:100]}', but "
                "multi-tenancy is disabled"
            )
        return TENANT


@attrs.frozen
class NotSupported:
    """A property Camunda knows and zeebe-sim does not implement: accepted only when it asks
    for nothing (absent, null, false, empty)."""

    what: str

    def parse(self, raw: Any, name: str) -> None:
        if raw in (False, [], {}, "", 0):
            return None
        raise InvalidArgument(f"'{name}' ({self.what}) is not supported by zeebe-sim")


REQUIRED: Any = attrs.NOTHING


def field(json_name: str, kind: Kind, default: Any = REQUIRED, *, nullable: bool = False) -> Any:
    """An attrs field read from ``json_name`` by ``kind``; absent means ``default`` (a missing
    required field is a 400 "No <name> provided", as Camunda words it). An explicit null is
    the same as absent only where the Orchestration Cluster API marks the field nullable;
    elsewhere it is refused, as the API's schema refuses it."""
    metadata = {"json": json_name, "kind": kind, "nullable": nullable}
    return attrs.field(default=default, metadata=metadata)


T = TypeVar("T")


def parse_object(cls: type[T], body: Mapping[str, Any], prefix: str = "") -> T:
    """Build the typed request ``cls`` from a checked JSON object.

    Raises InvalidArgument for a missing required field or a field its kind refuses.
    """
    fields = attrs.fields(cls)  # type: ignore[arg-type]
    if getattr(cls, "strict", False):
        unknown = sorted(set(body) - {f.metadata["json"] for f in fields})
        if unknown:
            raise InvalidArgument(
                f"'{prefix}{unknown[0][:40]}' is not supported by zeebe-sim (supported: "
                f"{', '.join(prefix + f.metadata['json'] for f in fields)})"
            )
    kwargs: dict[str, Any] = {}
    for f in fields:
        name: str = f.metadata["json"]
        raw = body.get(name)
        if raw is None:
            if f.default is attrs.NOTHING:
                raise InvalidArgument(f"No {prefix}{name} provided")
            if name in body and not f.metadata["nullable"]:
                raise InvalidArgument(f"The value of '{prefix}{name}' must not be null")
            continue
        value = f.metadata["kind"].parse(raw, prefix + name)
        if value is not None:
            kwargs[f.name] = value
    return cls(**kwargs)


async def json_request(request: web.Request, cls: type[T], *, optional: bool = False) -> T:
    """The typed request ``cls`` read from the request's JSON body (see :func:`json_body`)."""
    return parse_object(cls, await json_body(request, optional=optional))


# -- the requests --------------------------------------------------------------------------------


@attrs.frozen
class CreateInstanceRequest:
    process_definition_id: str | None = field("processDefinitionId", Text(1), None)
    process_definition_key: int | None = field("processDefinitionKey", Key(), None)
    version: int = field("processDefinitionVersion", Integer(-1, INT32_MAX), -1)
    variables: dict[str, Any] = field("variables", Variables(), attrs.Factory(dict))
    tenant_id: str = field("tenantId", Tenant(), TENANT)
    operation_reference: int | None = field("operationReference", Integer(1), None)
    tags: None = field("tags", NotSupported("tags"), None, nullable=True)
    start_instructions: None = field(
        "startInstructions", NotSupported("start instructions"), None, nullable=True
    )
    runtime_instructions: None = field(
        "runtimeInstructions", NotSupported("runtime instructions"), None, nullable=True
    )
    await_completion: None = field(
        "awaitCompletion", NotSupported("awaiting completion"), None, nullable=True
    )
    business_id: None = field("businessId", NotSupported("business ids"), None, nullable=True)

    def __attrs_post_init__(self) -> None:
        if (self.process_definition_id is None) == (self.process_definition_key is None):
            raise InvalidArgument(
                "Expected exactly one of processDefinitionId or processDefinitionKey"
            )


@attrs.frozen
class ActivateJobsRequest:
    type: str = field("type", Text(1))
    max_jobs_to_activate: int = field("maxJobsToActivate", Integer(1, JOBS_TO_ACTIVATE_MAX))
    timeout_ms: int = field("timeout", Integer(1))
    worker: str = field("worker", Text(), "")
    fetch_variable: tuple[str, ...] = field("fetchVariable", ListOf(Text()), ())
    # Camunda: > 0 waits up to that long for a job, 0 means the gateway's default, < 0 answers
    # at once.
    request_timeout_ms: int = field("requestTimeout", Integer(), 0)
    tenant_ids: tuple[str, ...] = field("tenantIds", ListOf(Tenant(), 1), ())
    tenant_filter: str = field("tenantFilter", OneOf(("PROVIDED", "ASSIGNED")), "PROVIDED")
    with_lease: None = field("withLease", NotSupported("job leases"), None, nullable=True)


@attrs.frozen
class CompleteJobRequest:
    variables: dict[str, Any] = field("variables", Variables(), attrs.Factory(dict), nullable=True)
    result: None = field("result", NotSupported("job results"), None, nullable=True)
    business_id: None = field("businessId", NotSupported("business ids"), None, nullable=True)


@attrs.frozen
class FailJobRequest:
    retries: int = field("retries", Integer(0, INT32_MAX), 0)
    error_message: str = field("errorMessage", Text(), "")
    retry_back_off_ms: int = field("retryBackOff", Integer(0), 0)
    variables: dict[str, Any] = field("variables", Variables(), attrs.Factory(dict))
    job_lease_token: None = field("jobLeaseToken", NotSupported("job leases"), None, nullable=True)


@attrs.frozen
class ThrowJobErrorRequest:
    error_code: str = field("errorCode", Text(1))
    error_message: str = field("errorMessage", Text(), "", nullable=True)
    variables: dict[str, Any] = field("variables", Variables(), attrs.Factory(dict), nullable=True)
    job_lease_token: None = field("jobLeaseToken", NotSupported("job leases"), None, nullable=True)


@attrs.frozen
class JobChangeset:
    retries: int | None = field("retries", Integer(0, INT32_MAX), None, nullable=True)
    timeout_ms: int | None = field("timeout", Integer(0), None, nullable=True)
    priority: None = field("priority", NotSupported("job priorities"), None, nullable=True)


@attrs.frozen
class UpdateJobRequest:
    changeset: JobChangeset = field("changeset", Nested(JobChangeset))
    operation_reference: int | None = field("operationReference", Integer(1), None)
    job_lease_token: None = field("jobLeaseToken", NotSupported("job leases"), None, nullable=True)

    def __attrs_post_init__(self) -> None:
        if self.changeset.retries is None and self.changeset.timeout_ms is None:
            raise InvalidArgument(
                "Expected a changeset with at least one of retries and timeout, but none given"
            )


@attrs.frozen
class OperationRequest:
    """The body of a cancellation or an incident resolution: only an operation reference."""

    operation_reference: int | None = field("operationReference", Integer(1), None)


@attrs.frozen
class SetVariablesRequest:
    variables: dict[str, Any] = field("variables", Variables())
    local: bool = field("local", Flag(), False)
    operation_reference: int | None = field("operationReference", Integer(1), None)


@attrs.frozen
class PublishMessageRequest:
    name: str = field("name", Text(1))
    correlation_key: str = field("correlationKey", Text(), "")
    time_to_live_ms: int = field("timeToLive", Integer(0), 0)
    message_id: str = field("messageId", Text(), "")
    variables: dict[str, Any] = field("variables", Variables(), attrs.Factory(dict))
    tenant_id: str = field("tenantId", Tenant(), TENANT)
    business_id: None = field("businessId", NotSupported("business ids"), None, nullable=True)


@attrs.frozen
class Resource:
    name: str
    content: bytes


@attrs.frozen
class DeploymentRequest:
    resources: tuple[Resource, ...]
    tenant_id: str = TENANT


async def deployment_request(request: web.Request) -> DeploymentRequest:
    """The resources of a ``multipart/form-data`` deployment (parts named ``resources``, and an
    optional ``tenantId``; other parts are ignored, as Camunda does).

    Raises UnsupportedMediaType (415) for another media type, PayloadTooLarge (413) beyond
    ``RESOURCE_BYTES_MAX`` per resource or ``DEPLOYMENT_BYTES_MAX`` in all, InvalidArgument
    (400) for a malformed body, an undecodable file name or no resource.
    """
    if request.content_type != "multipart/form-data":
        raise UnsupportedMediaType(
            f"Content-Type '{request.content_type}' is not supported: send multipart/form-data "
            "with one or more 'resources' file parts"
        )
    resources: list[Resource] = []
    tenant = TENANT
    total = 0
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, aiohttp.BodyPartReader):
                raise InvalidArgument("A nested multipart part is not a deployment resource")
            if part.name == "tenantId":
                raw = (await _read_part(part, 1024)).decode("utf-8", "surrogateescape")
                check_text(raw, "the tenantId part")
                tenant = Tenant().parse(raw, "tenantId")
                continue
            if part.name != "resources":
                await part.release()
                continue
            name = part.filename or "resource.bpmn"
            check_text(name, "a resource's file name")
            content = await _read_part(part, RESOURCE_BYTES_MAX)
            if len(content) > RESOURCE_BYTES_MAX:
                raise PayloadTooLarge(
                    f"Resource '{name}' is {len(content)} bytes, more than the limit of "
                    f"{RESOURCE_BYTES_MAX} bytes"
                )
            total += len(content) + len(name.encode())
            if total > DEPLOYMENT_BYTES_MAX:
                raise PayloadTooLarge(
                    f"The deployment's resources exceed the limit of {DEPLOYMENT_BYTES_MAX} "
                    "bytes in all: it is distributed to every partition in one message of at "
                    f"most {FRAME_BYTES_MAX} bytes"
                )
            if len(resources) == RESOURCES_PER_DEPLOYMENT_MAX:
                raise InvalidArgument(
                    f"A deployment holds at most {RESOURCES_PER_DEPLOYMENT_MAX} resources"
                )
            resources.append(Resource(name, content))
    except (ValueError, LookupError, HttpProcessingError) as exc:
        # aiohttp's multipart reader reports malformed input (no or a bad boundary, a bad part
        # header, a body cut short) with these; anything it raises is about the client's bytes.
        raise InvalidArgument(f"The multipart body is malformed: {exc}") from exc
    if not resources:
        raise InvalidArgument("No resources provided: add at least one 'resources' file part")
    return DeploymentRequest(tuple(resources), tenant)


async def _read_part(part: aiohttp.BodyPartReader, bytes_max: int) -> bytes:
    """A part's bytes, reading at most one chunk past ``bytes_max`` (the caller refuses it)."""
    content = bytearray()
    while len(content) <= bytes_max and (chunk := await part.read_chunk()):
        content += chunk
    return bytes(content)


# -- search ---------------------------------------------------------------------------------------


@attrs.frozen
class SortCursor:
    """A page cursor: the sort values of an item, opaque to clients (base64url of JSON)."""

    def parse(self, raw: Any, name: str) -> tuple[Any, ...]:
        if not isinstance(raw, str):
            raise _wrong_type(name, "a cursor string", raw)
        try:
            values = json.loads(base64.urlsafe_b64decode(raw.encode("ascii")))
        except (ValueError, binascii.Error, UnicodeError) as exc:
            raise InvalidArgument(f"The cursor '{raw[:40]}' in '{name}' is not valid") from exc
        if not isinstance(values, list) or not values:
            raise InvalidArgument(f"The cursor '{raw[:40]}' in '{name}' is not valid")
        check_document(values)
        return tuple(values)


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode("ascii")


@attrs.frozen
class Page:
    """Camunda's four page shapes in one: offset (``from``), cursors (``after``/``before``)."""

    from_: int = field("from", Integer(0, SEARCH_WINDOW_MAX), 0)
    limit: int = field("limit", Integer(1, SEARCH_WINDOW_MAX), SEARCH_PAGE_DEFAULT)
    after: tuple[Any, ...] | None = field("after", SortCursor(), None)
    before: tuple[Any, ...] | None = field("before", SortCursor(), None)

    def __attrs_post_init__(self) -> None:
        if sum((self.from_ > 0, self.after is not None, self.before is not None)) > 1:
            raise InvalidArgument("Use only one of page.from, page.after and page.before")
        if self.from_ + self.limit > SEARCH_WINDOW_MAX:
            raise InvalidArgument(
                f"page.from + page.limit must not exceed {SEARCH_WINDOW_MAX}; use page.after "
                "to go further"
            )


@attrs.frozen
class Condition:
    """A filter property: a plain value means equality; an object holds Camunda's operators."""

    value: Kind
    OPERATORS: ClassVar[dict[str, str]] = {
        "$eq": "eq",
        "$neq": "neq",
        "$in": "in",
        "$notIn": "notIn",
        "$exists": "exists",
        "$gt": "gt",
        "$gte": "gte",
        "$lt": "lt",
        "$lte": "lte",
    }

    def parse(self, raw: Any, name: str) -> tuple[tuple[str, Any], ...]:
        if not isinstance(raw, dict):
            return (("eq", self.value.parse(raw, name)),)
        conditions: list[tuple[str, Any]] = []
        for operator, operand in raw.items():
            op = self.OPERATORS.get(operator)
            if op is None:
                raise InvalidArgument(
                    f"The filter operator '{operator[:40]}' in '{name}' is not supported by "
                    f"zeebe-sim (supported: {', '.join(self.OPERATORS)})"
                )
            where = f"{name}.{operator}"
            if op == "exists":
                conditions.append((op, Flag().parse(operand, where)))
            elif op in ("in", "notIn"):
                conditions.append((op, list(ListOf(self.value).parse(operand, where))))
            else:
                conditions.append((op, self.value.parse(operand, where)))
        return tuple(conditions)


INSTANCE_STATES = ("ACTIVE", "COMPLETED", "TERMINATED", "SUSPENDED")


class _Filter:
    """A search filter: its fields are ``Condition`` kinds named like the search items."""

    strict: ClassVar[bool] = True

    def conditions(self) -> list[list[Any]]:
        """``[field, operator, operand]`` triples over the search items' REST field names."""
        return [
            [f.metadata["json"], op, operand]
            for f in attrs.fields(type(self))  # type: ignore[arg-type]
            for op, operand in getattr(self, f.name)
        ]


@attrs.frozen
class InstanceFilter(_Filter):
    """The filter properties zeebe-sim can evaluate; any other is refused by name (ignoring it
    would answer instances the client asked to exclude)."""

    process_instance_key: Any = field("processInstanceKey", Condition(Key()), ())
    process_definition_id: Any = field("processDefinitionId", Condition(Text()), ())
    process_definition_key: Any = field("processDefinitionKey", Condition(Key()), ())
    process_definition_version: Any = field(
        "processDefinitionVersion", Condition(Integer(INT64_MIN)), ()
    )
    process_definition_name: Any = field("processDefinitionName", Condition(Text()), ())
    state: Any = field("state", Condition(OneOf(INSTANCE_STATES)), ())
    has_incident: Any = field("hasIncident", Condition(Flag()), ())
    tenant_id: Any = field("tenantId", Condition(Text()), ())


INSTANCE_SORT_FIELDS = (
    "processInstanceKey",
    "processDefinitionId",
    "processDefinitionName",
    "processDefinitionVersion",
    "processDefinitionVersionTag",
    "processDefinitionKey",
    "parentProcessInstanceKey",
    "parentElementInstanceKey",
    "startDate",
    "endDate",
    "state",
    "hasIncident",
    "tenantId",
    "businessId",
    "suspendedDate",
)


def sort_order(fields: tuple[str, ...]) -> type[Any]:
    """The ``{field, order}`` class of a search whose items sort by ``fields``."""

    @attrs.frozen
    class Sort:
        field_: str = field("field", OneOf(fields))
        order: str = field("order", OneOf(("ASC", "DESC"), case_insensitive=True), "ASC")

    return Sort


class _Search:
    """What every search request shares: its cursors must match its sort, which always ends
    with the items' key (``key_field``) so that a cursor names one position."""

    key_field: ClassVar[str]
    sort: tuple[Any, ...]
    page: Page

    def __attrs_post_init__(self) -> None:
        for cursor in (self.page.after, self.page.before):
            if cursor is not None and len(cursor) != len(self.sort) + 1:
                raise InvalidArgument("The page cursor does not belong to this sort order")

    def sort_spec(self) -> list[list[Any]]:
        """``[field, descending]`` pairs, ending with the key as the unique tiebreaker."""
        return [[s.field_, s.order == "DESC"] for s in self.sort] + [[self.key_field, False]]


InstanceSort = sort_order(INSTANCE_SORT_FIELDS)


@attrs.frozen
class InstanceSearchRequest(_Search):
    key_field: ClassVar[str] = "processInstanceKey"
    filter: InstanceFilter = field("filter", Nested(InstanceFilter), attrs.Factory(InstanceFilter))
    sort: tuple[Any, ...] = field("sort", ListOf(Nested(InstanceSort), 10), ())
    page: Page = field("page", Nested(Page), attrs.Factory(Page))


INCIDENT_ERROR_TYPES = (
    "JOB_NO_RETRIES",
    "EXTRACT_VALUE_ERROR",
    "UNHANDLED_ERROR_EVENT",
    "IO_MAPPING_ERROR",
    "CONDITION_ERROR",
    "CALLED_ELEMENT_ERROR",
    "DECISION_EVALUATION_ERROR",
    "MESSAGE_SIZE_EXCEEDED",
    "RESOURCE_NOT_FOUND",
    "UNKNOWN",
    "UNSPECIFIED",
)
INCIDENT_STATES = ("ACTIVE", "MIGRATED", "PENDING", "RESOLVED", "UNKNOWN")


@attrs.frozen
class IncidentFilter(_Filter):
    incident_key: Any = field("incidentKey", Condition(Key()), ())
    process_instance_key: Any = field("processInstanceKey", Condition(Key()), ())
    process_definition_key: Any = field("processDefinitionKey", Condition(Key()), ())
    process_definition_id: Any = field("processDefinitionId", Condition(Text()), ())
    element_id: Any = field("elementId", Condition(Text()), ())
    element_instance_key: Any = field("elementInstanceKey", Condition(Key()), ())
    job_key: Any = field("jobKey", Condition(Key()), ())
    error_type: Any = field("errorType", Condition(OneOf(INCIDENT_ERROR_TYPES)), ())
    state: Any = field("state", Condition(OneOf(INCIDENT_STATES)), ())
    tenant_id: Any = field("tenantId", Condition(Text()), ())


IncidentSort = sort_order(
    (
        "incidentKey",
        "processInstanceKey",
        "processDefinitionKey",
        "processDefinitionId",
        "elementId",
        "elementInstanceKey",
        "jobKey",
        "errorType",
        "creationTime",
        "state",
        "tenantId",
    )
)


@attrs.frozen
class IncidentSearchRequest(_Search):
    key_field: ClassVar[str] = "incidentKey"
    filter: IncidentFilter = field("filter", Nested(IncidentFilter), attrs.Factory(IncidentFilter))
    sort: tuple[Any, ...] = field("sort", ListOf(Nested(IncidentSort), 10), ())
    page: Page = field("page", Nested(Page), attrs.Factory(Page))
