"""Parse the subset of BPMN 2.0 that zeebe-sim executes.

Theory of operation
-------------------
A deployment resource is XML as Camunda Modeler exports it. ``parse_bpmn`` turns it into one
``ProcessModel`` per executable ``bpmn:process``: a flat map of flow nodes, each knowing the one
node (and the one sequence flow) that follows it. That shape is all the engine needs, because the
subset has no gateways: a token never forks or joins, it walks a single path from the none start
event and waits at service tasks (a job) and message catch events (a subscription).

Parsing is strict on purpose. Whatever the engine cannot execute faithfully (gateways, user
tasks, timers, boundary events, input/output mappings, conditions, expressions) is rejected at
deployment with a message naming the element, instead of being silently skipped and then behaving
differently from Zeebe at run time. Purely descriptive content (documentation, the diagram, lanes,
text annotations, extension elements of other vendors) is ignored, as Zeebe ignores it.

The XML is untrusted input from the REST API: it is size-checked before parsing and parsed with
``defusedxml`` with DTDs forbidden, so no entity expansion ("billion laughs") and no external
entity or DTD is ever fetched.

Every rejection raises ``InvalidArgument``; the deployment processor prefixes the resource name.
The models are frozen and convert to and from plain dicts (``to_dict``/``from_dict``) because the
broker stores them in partition state and writes them into records (msgpack and JSON).
"""

from __future__ import annotations

import re
from typing import Any
from xml.etree.ElementTree import Element, ParseError

import attrs
import defusedxml
import defusedxml.ElementTree

from zeebe_sim.ground.errors import InvalidArgument

BPMN_NS = "http://www.omg.org/spec/BPMN/20100524/MODEL"
ZEEBE_NS = "http://camunda.org/schema/zeebe/1.0"

# Checked before the parser sees a byte. Modeler files are tens of KiB; Zeebe's own limit on a
# deployment is the 4 MiB max message size, so nothing legitimate is refused.
BPMN_BYTES_MAX = 4 * 1024 * 1024

# Zeebe's default when a task definition has no `retries` attribute.
DEFAULT_JOB_RETRIES = 3

START_EVENT = "startEvent"
END_EVENT = "endEvent"
SERVICE_TASK = "serviceTask"
MESSAGE_CATCH_EVENT = "messageCatchEvent"
FLOW_NODE_KINDS = frozenset({START_EVENT, END_EVENT, SERVICE_TASK, MESSAGE_CATCH_EVENT})

# BPMN element (inside a process) -> the kind of flow node it becomes. Lookups in these tables
# are the whole policy: an element in none of them is unsupported and rejected by name.
_FLOW_NODE_ELEMENTS = {
    "startEvent": START_EVENT,
    "endEvent": END_EVENT,
    "serviceTask": SERVICE_TASK,
    "intermediateCatchEvent": MESSAGE_CATCH_EVENT,
}
# Process children with no effect on execution (lanes, annotations, data objects).
_IGNORED_PROCESS_CHILDREN = frozenset(
    {
        "documentation",
        "extensionElements",
        "laneSet",
        "textAnnotation",
        "association",
        "group",
        "dataObject",
        "dataObjectReference",
        "dataStoreReference",
    }
)
# BPMN children each supported element may have. Anything else in the BPMN namespace (an event
# definition other than a message, loop characteristics, data associations, a condition) changes
# behaviour and is rejected.
_FLOW_NODE_CHILDREN = frozenset({"documentation", "extensionElements", "incoming", "outgoing"})
_ALLOWED_CHILDREN = {
    "startEvent": _FLOW_NODE_CHILDREN,
    "endEvent": _FLOW_NODE_CHILDREN,
    "serviceTask": _FLOW_NODE_CHILDREN,
    "intermediateCatchEvent": _FLOW_NODE_CHILDREN | {"messageEventDefinition"},
    "sequenceFlow": frozenset({"documentation", "extensionElements"}),
}
# zeebe:* extension elements each owner may carry. Others (ioMapping, taskHeaders, execution
# listeners, ...) would change behaviour and are rejected; zeebe:properties is metadata only.
_ALLOWED_ZEEBE_EXTENSIONS = {
    "process": frozenset({"versionTag", "properties"}),
    "startEvent": frozenset({"properties"}),
    "endEvent": frozenset({"properties"}),
    "serviceTask": frozenset({"taskDefinition", "properties"}),
    "intermediateCatchEvent": frozenset({"properties"}),
    "sequenceFlow": frozenset({"properties"}),
    "message": frozenset({"subscription"}),
}

# A FEEL string literal without escapes, e.g. `="demo-task"`: the one expression form that is
# really a constant, so it is accepted wherever a literal is.
_FEEL_STRING_LITERAL = re.compile(r'=\s*"([^"\\]*)"\s*')
# `=orderId`: a correlation key read from one top-level variable, the only form the engine
# evaluates. FEEL literals that look like names are not variables.
_FEEL_VARIABLE = re.compile(r"=\s*([A-Za-z_][A-Za-z0-9_]*)\s*")
_FEEL_KEYWORDS = frozenset({"true", "false", "null"})
_RETRIES = re.compile(r"=?\s*([0-9]{1,9})\s*")


@attrs.frozen
class FlowNode:
    """One element a token can be at.

    ``outgoing`` is the id of the next flow node and ``outgoing_flow`` the id of the sequence flow
    leading there; both are None exactly for end events. ``job_type``/``job_retries`` are set for
    service tasks (retries is 0 elsewhere), ``message_name``/``correlation_key_variable`` for
    message catch events.
    """

    id: str
    kind: str
    name: str | None = None
    outgoing: str | None = None
    outgoing_flow: str | None = None
    job_type: str | None = None
    job_retries: int = 0
    message_name: str | None = None
    correlation_key_variable: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "outgoing": self.outgoing,
            "outgoingFlow": self.outgoing_flow,
            "jobType": self.job_type,
            "jobRetries": self.job_retries,
            "messageName": self.message_name,
            "correlationKeyVariable": self.correlation_key_variable,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FlowNode:
        """Rebuild a node from ``to_dict`` output.

        Raises ``InvalidArgument`` if the kind is unknown (state written by a newer version).
        """
        kind = str(d["kind"])
        if kind not in FLOW_NODE_KINDS:
            raise InvalidArgument(f"Unknown flow node kind '{kind}'")
        return cls(
            id=str(d["id"]),
            kind=kind,
            name=d.get("name"),
            outgoing=d.get("outgoing"),
            outgoing_flow=d.get("outgoingFlow"),
            job_type=d.get("jobType"),
            job_retries=int(d.get("jobRetries", 0)),
            message_name=d.get("messageName"),
            correlation_key_variable=d.get("correlationKeyVariable"),
        )


@attrs.frozen
class ProcessModel:
    """One executable process: ``nodes`` by id, ``flows`` as flow id -> (source, target).

    Frozen, but the dicts are shared: treat them as read-only.
    """

    bpmn_process_id: str
    name: str | None
    start_node: str
    nodes: dict[str, FlowNode]
    flows: dict[str, tuple[str, str]]

    def to_dict(self) -> dict[str, Any]:
        # Lists rather than maps keyed by id: the id is already in each entry, and lists keep
        # document order through msgpack and JSON alike.
        return {
            "bpmnProcessId": self.bpmn_process_id,
            "name": self.name,
            "startNode": self.start_node,
            "nodes": [node.to_dict() for node in self.nodes.values()],
            "flows": [
                {"id": flow_id, "source": source, "target": target}
                for flow_id, (source, target) in self.flows.items()
            ],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProcessModel:
        """Rebuild a model from ``to_dict`` output (after a msgpack or JSON round trip).

        Raises ``InvalidArgument`` if a node kind is unknown.
        """
        nodes = [FlowNode.from_dict(n) for n in d["nodes"]]
        return cls(
            bpmn_process_id=str(d["bpmnProcessId"]),
            name=d.get("name"),
            start_node=str(d["startNode"]),
            nodes={node.id: node for node in nodes},
            flows={str(f["id"]): (str(f["source"]), str(f["target"])) for f in d["flows"]},
        )


def parse_bpmn(xml: bytes, resource_name: str) -> list[ProcessModel]:
    """Parse a BPMN 2.0 resource into its executable processes, in document order.

    Raises ``InvalidArgument`` if the resource is too large, not well-formed XML, uses a DTD,
    is not BPMN 2.0, has no executable process, or uses anything outside the supported subset.
    """
    root = _parse_xml(xml, resource_name)
    _check_unique_ids(root)
    messages = {
        m.get("id", ""): m for m in root if m.tag == _bpmn("message") and m.get("id") is not None
    }
    processes = [
        child
        for child in root
        if child.tag == _bpmn("process") and child.get("isExecutable", "false").strip() == "true"
    ]
    if not processes:
        raise InvalidArgument(
            "Must contain at least one executable process (a 'bpmn:process' with "
            'isExecutable="true")'
        )
    return [_parse_process(process, messages) for process in processes]


# -- XML -------------------------------------------------------------------------------------


def _bpmn(local: str) -> str:
    return f"{{{BPMN_NS}}}{local}"


def _split(tag: str) -> tuple[str, str]:
    """``{ns}local`` -> (ns, local); ns is "" for elements without a namespace."""
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


def _parse_xml(xml: bytes, resource_name: str) -> Element:
    if len(xml) > BPMN_BYTES_MAX:
        raise InvalidArgument(
            f"Resource '{resource_name}' is {len(xml)} bytes, more than the limit of "
            f"{BPMN_BYTES_MAX} bytes"
        )
    try:
        # forbid_dtd: a DTD is the only way to declare entities, so refusing it outright also
        # rules out entity expansion and external entities (defusedxml forbids those too).
        root: Element = defusedxml.ElementTree.fromstring(
            xml, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except defusedxml.DefusedXmlException as exc:
        raise InvalidArgument(
            f"Resource '{resource_name}' uses a DTD or entity declaration, which is not allowed"
        ) from exc
    except ParseError as exc:
        raise InvalidArgument(f"Resource '{resource_name}' is not well-formed XML: {exc}") from exc
    except (LookupError, ValueError) as exc:
        # The XML declaration names an encoding Python has no text codec for ('bogus', 'rot13')
        # or one expat cannot use ('utf-7', multi-byte codecs): the client's mistake.
        raise InvalidArgument(
            f"Resource '{resource_name}' declares an XML encoding that cannot be decoded: {exc}"
        ) from exc
    if root.tag != _bpmn("definitions"):
        ns, local = _split(root.tag)
        raise InvalidArgument(
            f"Resource '{resource_name}' is not a BPMN 2.0 model: expected root element "
            f"'definitions' in namespace '{BPMN_NS}', but found '{local}'"
            + (f" in namespace '{ns}'" if ns else " without a namespace")
        )
    return root


def _check_unique_ids(root: Element) -> None:
    # XML ids are document-wide (sequence flows, messages and diagram shapes share one space),
    # and a duplicate would make every reference to it ambiguous.
    seen: set[str] = set()
    for element in root.iter():
        element_id = element.get("id")
        if element_id is None:
            continue
        if element_id in seen:
            raise InvalidArgument(f"Duplicate id '{element_id}': ids must be unique in a resource")
        seen.add(element_id)


def _unsupported(local: str, element: Element) -> InvalidArgument:
    element_id = element.get("id")
    where = f" (id '{element_id}')" if element_id else ""
    return InvalidArgument(f"Element '{local}'{where} is not supported by zeebe-sim")


def _check_children(element: Element, local: str, element_id: str) -> None:
    """Reject BPMN children outside the element's allowed set, naming them."""
    allowed = _ALLOWED_CHILDREN[local]
    for child in element:
        ns, child_local = _split(child.tag)
        if ns == BPMN_NS and child_local not in allowed:
            raise InvalidArgument(
                f"Element '{child_local}' (in {local} '{element_id}') is not supported by zeebe-sim"
            )


def _zeebe_extensions(element: Element, owner: str, owner_id: str) -> dict[str, list[Element]]:
    """The zeebe:* extension elements of ``element`` by local name; unknown ones are rejected.

    Extension elements of other namespaces (e.g. Camunda 7's) are ignored, as Zeebe does.
    """
    found: dict[str, list[Element]] = {}
    allowed = _ALLOWED_ZEEBE_EXTENSIONS[owner]
    for extensions in element.findall(_bpmn("extensionElements")):
        for extension in extensions:
            ns, local = _split(extension.tag)
            if ns != ZEEBE_NS:
                continue
            if local not in allowed:
                raise InvalidArgument(
                    f"Extension element 'zeebe:{local}' (in {owner} '{owner_id}') is not "
                    "supported by zeebe-sim"
                )
            found.setdefault(local, []).append(extension)
    return found


def _exactly_one(extensions: dict[str, list[Element]], local: str, owner_id: str) -> Element:
    elements = extensions.get(local, [])
    if len(elements) != 1:
        raise InvalidArgument(
            f"Element '{owner_id}': Must have exactly one 'zeebe:{local}' extension element"
        )
    return elements[0]


def _static_string(value: str | None, attribute: str, owner_id: str) -> str:
    """A non-empty literal attribute value; `="literal"` counts, other expressions do not."""
    value = (value or "").strip()
    if value.startswith("="):
        literal = _FEEL_STRING_LITERAL.fullmatch(value)
        if literal is None:
            raise InvalidArgument(
                f"Element '{owner_id}': Expression '{value}' in attribute '{attribute}' is not "
                "supported by zeebe-sim, use a literal value"
            )
        value = literal.group(1)
    if not value:
        raise InvalidArgument(
            f"Element '{owner_id}': Attribute '{attribute}' must be present and not empty"
        )
    return value


# -- processes -------------------------------------------------------------------------------


@attrs.frozen
class _Flow:
    id: str
    source: str
    target: str


def _parse_process(process: Element, messages: dict[str, Element]) -> ProcessModel:
    process_id = (process.get("id") or "").strip()
    if not process_id:
        raise InvalidArgument("A 'bpmn:process' must have a non-empty id")
    _zeebe_extensions(process, "process", process_id)

    nodes: dict[str, FlowNode] = {}
    flows: list[_Flow] = []
    for child in process:
        ns, local = _split(child.tag)
        if ns != BPMN_NS or local in _IGNORED_PROCESS_CHILDREN:
            continue
        if local == "sequenceFlow":
            flows.append(_parse_sequence_flow(child))
        elif local in _FLOW_NODE_ELEMENTS:
            node = _parse_flow_node(child, local, messages)
            nodes[node.id] = node
        else:
            raise _unsupported(local, child)

    return _link(process_id, process.get("name"), nodes, flows)


def _element_id(element: Element, local: str) -> str:
    element_id = (element.get("id") or "").strip()
    if not element_id:
        raise InvalidArgument(f"Element '{local}' must have a non-empty id")
    return element_id


def _parse_sequence_flow(element: Element) -> _Flow:
    flow_id = _element_id(element, "sequenceFlow")
    _check_children(element, "sequenceFlow", flow_id)
    _zeebe_extensions(element, "sequenceFlow", flow_id)
    source, target = element.get("sourceRef"), element.get("targetRef")
    if not source or not target:
        raise InvalidArgument(
            f"Sequence flow '{flow_id}' must have both a sourceRef and a targetRef"
        )
    return _Flow(flow_id, source, target)


def _parse_flow_node(element: Element, local: str, messages: dict[str, Element]) -> FlowNode:
    node_id = _element_id(element, local)
    _check_children(element, local, node_id)
    extensions = _zeebe_extensions(element, local, node_id)
    kind = _FLOW_NODE_ELEMENTS[local]
    name = element.get("name")
    if kind == SERVICE_TASK:
        definition = _exactly_one(extensions, "taskDefinition", node_id)
        job_type = _static_string(definition.get("type"), "type", node_id)
        return FlowNode(
            node_id, kind, name, job_type=job_type, job_retries=_retries(definition, node_id)
        )
    if kind == MESSAGE_CATCH_EVENT:
        definitions = element.findall(_bpmn("messageEventDefinition"))
        if len(definitions) != 1:
            raise InvalidArgument(f"Element '{node_id}': Must have exactly one event definition")
        message_name, variable = _message(definitions[0], node_id, messages)
        return FlowNode(
            node_id, kind, name, message_name=message_name, correlation_key_variable=variable
        )
    return FlowNode(node_id, kind, name)


def _retries(definition: Element, node_id: str) -> int:
    raw = definition.get("retries")
    if raw is None:
        return DEFAULT_JOB_RETRIES
    match = _RETRIES.fullmatch(raw.strip())
    if match is None or int(match.group(1)) < 1:
        raise InvalidArgument(
            f"Element '{node_id}': Attribute 'retries' must be a positive integer, found '{raw}'"
        )
    return int(match.group(1))


def _message(definition: Element, node_id: str, messages: dict[str, Element]) -> tuple[str, str]:
    """The (message name, correlation key variable) a catch event waits for."""
    ref = definition.get("messageRef")
    if not ref:
        raise InvalidArgument(f"Element '{node_id}': Must reference a message")
    message = messages.get(ref)
    if message is None:
        raise InvalidArgument(
            f"Element '{node_id}': References message '{ref}', but no 'bpmn:message' with that "
            "id exists"
        )
    extensions = _zeebe_extensions(message, "message", ref)
    name = _static_string(message.get("name"), "name", ref)
    subscription = _exactly_one(extensions, "subscription", ref)
    key = (subscription.get("correlationKey") or "").strip()
    if not key:
        raise InvalidArgument(
            f"Element '{ref}': Attribute 'correlationKey' must be present and not empty"
        )
    variable = _FEEL_VARIABLE.fullmatch(key)
    if variable is None or variable.group(1) in _FEEL_KEYWORDS:
        raise InvalidArgument(
            f"Element '{ref}': Correlation key '{key}' is not supported by zeebe-sim: it must be "
            "'=' followed by a variable name, e.g. '=orderId'"
        )
    return name, variable.group(1)


def _link(
    process_id: str, name: str | None, nodes: dict[str, FlowNode], flows: list[_Flow]
) -> ProcessModel:
    """Attach each node's single outgoing flow and check the graph is one walkable path."""
    outgoing: dict[str, list[_Flow]] = {node_id: [] for node_id in nodes}
    incoming: dict[str, list[_Flow]] = {node_id: [] for node_id in nodes}
    for flow in flows:
        for role, ref in (("sourceRef", flow.source), ("targetRef", flow.target)):
            if ref not in nodes:
                raise InvalidArgument(
                    f"Sequence flow '{flow.id}': {role} '{ref}' is not a flow node of process "
                    f"'{process_id}'"
                )
        outgoing[flow.source].append(flow)
        incoming[flow.target].append(flow)

    starts = [node_id for node_id, node in nodes.items() if node.kind == START_EVENT]
    if len(starts) != 1:
        raise InvalidArgument(
            f"Process '{process_id}': Must have exactly one none start event, found {len(starts)}"
        )
    start = starts[0]
    if incoming[start]:
        raise InvalidArgument(
            f"Element '{start}': A start event must not have incoming sequence flows"
        )

    linked: dict[str, FlowNode] = {}
    for node_id, node in nodes.items():
        flows_out = outgoing[node_id]
        if node.kind == END_EVENT:
            if flows_out:
                raise InvalidArgument(
                    f"Element '{node_id}': An end event must not have outgoing sequence flows"
                )
            linked[node_id] = node
            continue
        if len(flows_out) > 1:
            # Several outgoing flows without a gateway are a parallel split in BPMN.
            raise InvalidArgument(
                f"Element '{node_id}': Has {len(flows_out)} outgoing sequence flows; forking "
                "(a parallel split) is not supported by zeebe-sim"
            )
        if not flows_out:
            raise InvalidArgument(
                f"Element '{node_id}': Must have exactly one outgoing sequence flow, found none"
            )
        flow = flows_out[0]
        linked[node_id] = attrs.evolve(node, outgoing=flow.target, outgoing_flow=flow.id)

    # Every node has at most one successor, so reachability is a walk, not a search; it stops at
    # an end event or when it comes back to a node (a loop of tasks is legal BPMN).
    reached: set[str] = set()
    current: str | None = start
    while current is not None and current not in reached:
        reached.add(current)
        current = linked[current].outgoing
    unreachable = [node_id for node_id in linked if node_id not in reached]
    if unreachable:
        raise InvalidArgument(
            f"Process '{process_id}': Elements not reachable from the start event "
            f"'{start}': " + ", ".join(f"'{node_id}'" for node_id in unreachable)
        )

    return ProcessModel(
        bpmn_process_id=process_id,
        name=name,
        start_node=start,
        nodes=linked,
        flows={flow.id: (flow.source, flow.target) for flow in flows},
    )
