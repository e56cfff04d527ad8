"""Parsing the BPMN subset: the shipped examples, the model's round trip, and every rejection."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.engine.bpmn import (
    BPMN_BYTES_MAX,
    DEFAULT_JOB_RETRIES,
    END_EVENT,
    MESSAGE_CATCH_EVENT,
    SERVICE_TASK,
    START_EVENT,
    FlowNode,
    ProcessModel,
    parse_bpmn,
)
from zeebe_sim.ground.errors import InvalidArgument

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

HEADER = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" '
    'xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" '
    'xmlns:camunda="http://camunda.org/schema/1.0/bpmn" '
    'id="Definitions_1" targetNamespace="http://bpmn.io/schema/bpmn">\n'
)
FOOTER = "</bpmn:definitions>\n"

START = '<bpmn:startEvent id="start" />'
END = '<bpmn:endEvent id="end" />'
MESSAGE = (
    '<bpmn:message id="Message_1" name="paid"><bpmn:extensionElements>'
    '<zeebe:subscription correlationKey="=orderId" /></bpmn:extensionElements></bpmn:message>'
)


def definitions(*parts: str) -> bytes:
    return (HEADER + "\n".join(parts) + FOOTER).encode()


def process(*elements: str, process_id: str = "p", executable: str = "true") -> str:
    body = "\n".join(elements)
    return f'<bpmn:process id="{process_id}" isExecutable="{executable}">\n{body}\n</bpmn:process>'


def flow(flow_id: str, source: str, target: str, body: str = "") -> str:
    return (
        f'<bpmn:sequenceFlow id="{flow_id}" sourceRef="{source}" targetRef="{target}">'
        f"{body}</bpmn:sequenceFlow>"
    )


def task(
    task_id: str, extensions: str = '<zeebe:taskDefinition type="work" />', body: str = ""
) -> str:
    return (
        f'<bpmn:serviceTask id="{task_id}"><bpmn:extensionElements>{extensions}'
        f"</bpmn:extensionElements>{body}</bpmn:serviceTask>"
    )


def catch(
    event_id: str, body: str = '<bpmn:messageEventDefinition messageRef="Message_1" />'
) -> str:
    return f'<bpmn:intermediateCatchEvent id="{event_id}">{body}</bpmn:intermediateCatchEvent>'


def one_task_process(task_xml: str) -> bytes:
    """start -> task_xml (id "t") -> end."""
    return definitions(
        process(START, task_xml, END, flow("f1", "start", "t"), flow("f2", "t", "end"))
    )


def one_catch_process(catch_xml: str, *root: str) -> bytes:
    """start -> catch_xml (id "c") -> end, with extra top-level elements."""
    return definitions(
        process(START, catch_xml, END, flow("f1", "start", "c"), flow("f2", "c", "end")), *root
    )


def rejected(xml: bytes) -> str:
    with pytest.raises(InvalidArgument) as info:
        parse_bpmn(xml, "test.bpmn")
    return info.value.message


def walk(model: ProcessModel) -> list[str]:
    """Node ids along the single path from the start event."""
    path = [model.start_node]
    while (nxt := model.nodes[path[-1]].outgoing) is not None:
        path.append(nxt)
    return path


# -- the shipped examples ----------------------------------------------------------------------


def test_demo_process_example() -> None:
    """The Modeler export of demo-process: start -> demo-task -> demo-message -> end."""
    [model] = parse_bpmn((EXAMPLES / "demo-process.bpmn").read_bytes(), "demo-process.bpmn")
    assert model.bpmn_process_id == "demo-process"
    assert model.name == "Demo process"
    kinds = [model.nodes[n].kind for n in walk(model)]
    assert kinds == [START_EVENT, SERVICE_TASK, MESSAGE_CATCH_EVENT, END_EVENT]
    _, work, wait, end = (model.nodes[n] for n in walk(model))
    assert (work.job_type, work.job_retries) == ("demo-task", DEFAULT_JOB_RETRIES)
    assert (wait.message_name, wait.correlation_key_variable) == ("demo-message", "correlationKey")
    assert (end.outgoing, end.outgoing_flow) == (None, None)
    # The flow ids survive, so SEQUENCE_FLOW_TAKEN records can name them.
    assert model.flows[work.outgoing_flow or ""] == (work.id, wait.id)
    assert len(model.flows) == 3


def test_order_process_example() -> None:
    """order-process: start -> reserve-stock (5 retries) -> ship-order -> end."""
    [model] = parse_bpmn((EXAMPLES / "order-process.bpmn").read_bytes(), "order-process.bpmn")
    assert model.bpmn_process_id == "order-process"
    nodes = [model.nodes[n] for n in walk(model)]
    assert [(n.kind, n.job_type, n.job_retries) for n in nodes] == [
        (START_EVENT, None, 0),
        (SERVICE_TASK, "reserve-stock", 5),
        (SERVICE_TASK, "ship-order", 3),
        (END_EVENT, None, 0),
    ]
    assert [n.name for n in nodes] == [
        "Order received",
        "Reserve stock",
        "Ship order",
        "Order shipped",
    ]


@pytest.mark.parametrize("name", ["demo-process.bpmn", "order-process.bpmn"])
def test_model_round_trips_through_msgpack_and_json(name: str) -> None:
    """to_dict is plain data: it survives the codecs the broker stores and sends it with."""
    [model] = parse_bpmn((EXAMPLES / name).read_bytes(), name)
    packed = msgpack.packb(model.to_dict(), use_bin_type=True)
    unpacked = msgpack.unpackb(packed, raw=False, strict_map_key=True)
    assert ProcessModel.from_dict(unpacked) == model
    assert ProcessModel.from_dict(json.loads(json.dumps(model.to_dict()))) == model


def test_from_dict_rejects_unknown_kind() -> None:
    """State naming a node kind this version cannot execute is refused, not half-loaded."""
    data = FlowNode("x", START_EVENT).to_dict() | {"kind": "userTask"}
    with pytest.raises(InvalidArgument, match="userTask"):
        FlowNode.from_dict(data)


# -- what is accepted --------------------------------------------------------------------------


def test_only_executable_processes_are_returned_in_document_order() -> None:
    """A file with several processes yields every executable one."""

    def minimal(process_id: str, executable: str = "true") -> str:
        # Ids are unique per file, so each process gets its own.
        start, end = f"{process_id}_start", f"{process_id}_end"
        return process(
            f'<bpmn:startEvent id="{start}" />',
            f'<bpmn:endEvent id="{end}" />',
            flow(f"{process_id}_flow", start, end),
            process_id=process_id,
            executable=executable,
        )

    xml = definitions(minimal("b"), minimal("skipped", executable="false"), minimal("a"))
    models = parse_bpmn(xml, "x.bpmn")
    assert [m.bpmn_process_id for m in models] == ["b", "a"]
    assert models[1].start_node == "a_start"


def test_descriptive_content_is_ignored() -> None:
    """Documentation, lanes, annotations, zeebe:properties and other vendors' extensions do not
    change execution, so they are accepted and ignored, as Zeebe does."""
    xml = definitions(
        '<bpmn:collaboration id="Collab_1"><bpmn:participant id="P_1" processRef="p" />'
        "</bpmn:collaboration>",
        process(
            "<bpmn:documentation>what it does</bpmn:documentation>",
            '<bpmn:laneSet id="LaneSet_1"><bpmn:lane id="Lane_1">'
            "<bpmn:flowNodeRef>start</bpmn:flowNodeRef></bpmn:lane></bpmn:laneSet>",
            START,
            task(
                "t",
                '<zeebe:taskDefinition type="work" /><camunda:inputOutput />'
                '<zeebe:properties><zeebe:property name="a" value="b" /></zeebe:properties>',
                "<bpmn:documentation>doc</bpmn:documentation>",
            ),
            END,
            flow("f1", "start", "t"),
            flow("f2", "t", "end"),
            '<bpmn:textAnnotation id="Note_1"><bpmn:text>note</bpmn:text></bpmn:textAnnotation>',
            '<bpmn:association id="Assoc_1" sourceRef="t" targetRef="Note_1" />',
        ),
    )
    [model] = parse_bpmn(xml, "x.bpmn")
    assert walk(model) == ["start", "t", "end"]


def test_feel_string_literal_counts_as_a_literal() -> None:
    """`="work"` is a constant, so it is accepted as the job type."""
    [model] = parse_bpmn(
        one_task_process(task("t", '<zeebe:taskDefinition type="=&quot;work&quot;" />')), "x"
    )
    assert model.nodes["t"].job_type == "work"


def test_loop_of_tasks_is_accepted() -> None:
    """A cycle is legal BPMN: the instance repeats the tasks until cancelled."""
    xml = definitions(
        process(
            START,
            task("a"),
            task("b"),
            flow("f1", "start", "a"),
            flow("f2", "a", "b"),
            flow("f3", "b", "a"),
        )
    )
    [model] = parse_bpmn(xml, "x.bpmn")
    assert model.nodes["b"].outgoing == "a"


@given(st.lists(st.sampled_from([SERVICE_TASK, MESSAGE_CATCH_EVENT]), max_size=12))
def test_any_chain_parses_to_the_same_path(kinds: list[str]) -> None:
    """start -> any sequence of tasks and catch events -> end parses to exactly that path, and
    the model survives a msgpack round trip."""
    ids = ["start", *(f"n{i}" for i in range(len(kinds))), "end"]
    elements = [START, END]
    for node_id, kind in zip(ids[1:-1], kinds, strict=True):
        elements.append(task(node_id) if kind == SERVICE_TASK else catch(node_id))
    elements += [flow(f"f{i}", a, b) for i, (a, b) in enumerate(itertools.pairwise(ids))]
    [model] = parse_bpmn(definitions(process(*elements), MESSAGE), "x.bpmn")
    assert walk(model) == ids
    assert [model.nodes[n].kind for n in ids[1:-1]] == kinds
    unpacked = msgpack.unpackb(msgpack.packb(model.to_dict()), raw=False, strict_map_key=True)
    assert ProcessModel.from_dict(unpacked) == model


# -- hostile or foreign input ------------------------------------------------------------------


def test_not_xml() -> None:
    assert "not well-formed XML" in rejected(b"this is not xml")


def test_empty_resource() -> None:
    assert "not well-formed XML" in rejected(b"")


def test_xml_but_not_bpmn() -> None:
    """A well-formed document with another root is named as not BPMN."""
    message = rejected(b"<html><body/></html>")
    assert "not a BPMN 2.0 model" in message
    assert "'html'" in message


def test_definitions_in_wrong_namespace() -> None:
    message = rejected(b'<definitions xmlns="http://example.com/other"/>')
    assert "not a BPMN 2.0 model" in message
    assert "http://example.com/other" in message


def test_no_process() -> None:
    assert "at least one executable process" in rejected(definitions(MESSAGE))


def test_no_executable_process() -> None:
    xml = definitions(process(START, END, flow("f", "start", "end"), executable="false"))
    assert "at least one executable process" in rejected(xml)


def test_entity_expansion_is_refused() -> None:
    """A "billion laughs" document is refused before any entity is expanded."""
    bomb = (
        b'<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>\n'
        b"<lolz>&lol2;</lolz>"
    )
    assert "DTD" in rejected(bomb)


def test_external_entity_is_refused() -> None:
    """An external entity (XXE) is never resolved."""
    xxe = (
        b'<?xml version="1.0"?>\n<!DOCTYPE d [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
        b'<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL">&xxe;'
        b"</bpmn:definitions>"
    )
    assert "DTD" in rejected(xxe)


def test_size_limit_is_checked_before_parsing() -> None:
    """A resource over the limit is refused even if it is valid BPMN."""
    valid = one_task_process(task("t"))
    padded = valid + b" " * (BPMN_BYTES_MAX - len(valid) + 1)
    assert f"limit of {BPMN_BYTES_MAX} bytes" in rejected(padded)
    assert parse_bpmn(valid + b" " * (BPMN_BYTES_MAX - len(valid)), "x")


# -- unsupported elements ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "element",
    [
        '<bpmn:exclusiveGateway id="Gateway_1" />',
        '<bpmn:parallelGateway id="Gateway_1" />',
        '<bpmn:userTask id="Gateway_1" />',
        '<bpmn:subProcess id="Gateway_1" />',
        '<bpmn:boundaryEvent id="Gateway_1" attachedToRef="start" />',
        '<bpmn:intermediateThrowEvent id="Gateway_1" />',
        '<bpmn:scriptTask id="Gateway_1" />',
        '<bpmn:callActivity id="Gateway_1" />',
    ],
)
def test_unsupported_flow_elements_are_named(element: str) -> None:
    """The message names the element and its id."""
    local = element.split()[0].removeprefix("<bpmn:")
    xml = definitions(process(START, END, flow("f", "start", "end"), element))
    assert rejected(xml) == f"Element '{local}' (id 'Gateway_1') is not supported by zeebe-sim"


@pytest.mark.parametrize(
    ("element", "expected"),
    [
        (
            '<bpmn:startEvent id="start"><bpmn:timerEventDefinition id="T" /></bpmn:startEvent>',
            "Element 'timerEventDefinition' (in startEvent 'start')",
        ),
        (
            '<bpmn:startEvent id="start"><bpmn:messageEventDefinition messageRef="Message_1" />'
            "</bpmn:startEvent>",
            "Element 'messageEventDefinition' (in startEvent 'start')",
        ),
    ],
)
def test_start_events_with_event_definitions_are_rejected(element: str, expected: str) -> None:
    """Only the none start event is supported."""
    xml = definitions(process(element, END, flow("f", "start", "end")), MESSAGE)
    assert rejected(xml).startswith(expected)


def test_error_end_event_is_rejected() -> None:
    xml = definitions(
        process(
            START,
            '<bpmn:endEvent id="end"><bpmn:errorEventDefinition /></bpmn:endEvent>',
            flow("f", "start", "end"),
        )
    )
    assert "Element 'errorEventDefinition' (in endEvent 'end')" in rejected(xml)


def test_timer_catch_event_is_rejected() -> None:
    xml = one_catch_process(catch("c", "<bpmn:timerEventDefinition />"))
    assert "Element 'timerEventDefinition' (in intermediateCatchEvent 'c')" in rejected(xml)


def test_multi_instance_task_is_rejected() -> None:
    xml = one_task_process(
        task("t", body='<bpmn:multiInstanceLoopCharacteristics isSequential="true" />')
    )
    assert "Element 'multiInstanceLoopCharacteristics' (in serviceTask 't')" in rejected(xml)


@pytest.mark.parametrize("extension", ["ioMapping", "taskHeaders", "executionListeners"])
def test_unsupported_zeebe_extensions_are_rejected(extension: str) -> None:
    """Mappings, headers and listeners would change behaviour, so they are refused by name."""
    xml = one_task_process(task("t", f'<zeebe:taskDefinition type="work" /><zeebe:{extension} />'))
    message = rejected(xml)
    assert f"'zeebe:{extension}' (in serviceTask 't') is not supported by zeebe-sim" in message


def test_conditional_sequence_flow_is_rejected() -> None:
    xml = definitions(
        process(
            START,
            END,
            flow("f", "start", "end", "<bpmn:conditionExpression>=x</bpmn:conditionExpression>"),
        )
    )
    assert "Element 'conditionExpression' (in sequenceFlow 'f')" in rejected(xml)


# -- service tasks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extensions",
    ["", '<zeebe:taskDefinition type="a" /><zeebe:taskDefinition type="b" />'],
)
def test_service_task_needs_exactly_one_task_definition(extensions: str) -> None:
    """Zeebe's own wording."""
    message = rejected(one_task_process(task("t", extensions)))
    assert message == "Element 't': Must have exactly one 'zeebe:taskDefinition' extension element"


@pytest.mark.parametrize("job_type", ["", "   "])
def test_service_task_job_type_must_not_be_empty(job_type: str) -> None:
    message = rejected(one_task_process(task("t", f'<zeebe:taskDefinition type="{job_type}" />')))
    assert "Attribute 'type' must be present and not empty" in message


def test_service_task_without_type_attribute() -> None:
    message = rejected(one_task_process(task("t", "<zeebe:taskDefinition />")))
    assert "Attribute 'type' must be present and not empty" in message


def test_service_task_job_type_expression_is_rejected() -> None:
    message = rejected(one_task_process(task("t", '<zeebe:taskDefinition type="=jobType" />')))
    assert "Expression '=jobType' in attribute 'type' is not supported by zeebe-sim" in message


@pytest.mark.parametrize(("retries", "expected"), [("1", 1), ("=7", 7), (" 12 ", 12)])
def test_retries_accepts_integers(retries: str, expected: int) -> None:
    xml = one_task_process(task("t", f'<zeebe:taskDefinition type="w" retries="{retries}" />'))
    assert parse_bpmn(xml, "x")[0].nodes["t"].job_retries == expected


@pytest.mark.parametrize("retries", ["0", "-1", "three", "=retries", ""])
def test_retries_must_be_a_positive_integer(retries: str) -> None:
    xml = one_task_process(task("t", f'<zeebe:taskDefinition type="w" retries="{retries}" />'))
    assert "Attribute 'retries' must be a positive integer" in rejected(xml)


# -- message catch events ----------------------------------------------------------------------


def message(key_attribute: str, name: str = "paid") -> str:
    return (
        f'<bpmn:message id="Message_1" name="{name}"><bpmn:extensionElements>'
        f"<zeebe:subscription {key_attribute} /></bpmn:extensionElements></bpmn:message>"
    )


def test_catch_event_reads_message_and_key_variable() -> None:
    [model] = parse_bpmn(one_catch_process(catch("c"), message('correlationKey="= orderId "')), "x")
    node = model.nodes["c"]
    assert (node.message_name, node.correlation_key_variable) == ("paid", "orderId")


def test_message_without_subscription_is_rejected() -> None:
    xml = one_catch_process(catch("c"), '<bpmn:message id="Message_1" name="paid" />')
    assert "Must have exactly one 'zeebe:subscription' extension element" in rejected(xml)


@pytest.mark.parametrize("key_attribute", ["", 'correlationKey=""'])
def test_message_without_correlation_key_is_rejected(key_attribute: str) -> None:
    xml = one_catch_process(catch("c"), message(key_attribute))
    assert "Attribute 'correlationKey' must be present and not empty" in rejected(xml)


@pytest.mark.parametrize("key", ["orderId", "=order.id", "=a + b", '="fixed"', "=true", "=1"])
def test_correlation_key_must_be_a_variable_name(key: str) -> None:
    """Only `=variableName` is evaluated by the engine; anything else is refused clearly."""
    xml = one_catch_process(
        catch("c"), message(f'correlationKey="{key.replace(chr(34), "&quot;")}"')
    )
    message_text = rejected(xml)
    assert "is not supported by zeebe-sim" in message_text
    assert "'=' followed by a variable name" in message_text


def test_message_name_expression_is_rejected() -> None:
    xml = one_catch_process(catch("c"), message('correlationKey="=k"', name="=messageName"))
    assert "Expression '=messageName' in attribute 'name'" in rejected(xml)


def test_message_without_name_is_rejected() -> None:
    xml = one_catch_process(catch("c"), message('correlationKey="=k"', name=""))
    assert "Attribute 'name' must be present and not empty" in rejected(xml)


def test_catch_event_without_message_ref_is_rejected() -> None:
    xml = one_catch_process(catch("c", "<bpmn:messageEventDefinition />"), MESSAGE)
    assert rejected(xml) == "Element 'c': Must reference a message"


def test_catch_event_with_unknown_message_is_rejected() -> None:
    xml = one_catch_process(catch("c", '<bpmn:messageEventDefinition messageRef="Nope" />'))
    assert "References message 'Nope'" in rejected(xml)


@pytest.mark.parametrize(
    "body",
    [
        "",
        '<bpmn:messageEventDefinition messageRef="Message_1" />'
        '<bpmn:messageEventDefinition messageRef="Message_1" />',
    ],
)
def test_catch_event_needs_exactly_one_event_definition(body: str) -> None:
    xml = one_catch_process(catch("c", body), MESSAGE)
    assert rejected(xml) == "Element 'c': Must have exactly one event definition"


# -- the shape of the graph --------------------------------------------------------------------


def test_no_start_event() -> None:
    xml = definitions(process(task("t"), END, flow("f", "t", "end")))
    assert "Must have exactly one none start event, found 0" in rejected(xml)


def test_two_start_events() -> None:
    xml = definitions(
        process(
            START,
            '<bpmn:startEvent id="start2" />',
            END,
            flow("f1", "start", "end"),
            flow("f2", "start2", "end"),
        )
    )
    assert "Must have exactly one none start event, found 2" in rejected(xml)


def test_start_event_with_incoming_flow() -> None:
    xml = definitions(process(START, task("t"), flow("f1", "start", "t"), flow("f2", "t", "start")))
    assert rejected(xml) == "Element 'start': A start event must not have incoming sequence flows"


def test_fork_is_rejected() -> None:
    """Two outgoing flows without a gateway are a parallel split."""
    xml = definitions(
        process(
            START,
            task("a"),
            task("b"),
            END,
            flow("f1", "start", "a"),
            flow("f2", "start", "b"),
            flow("f3", "a", "end"),
            flow("f4", "b", "end"),
        )
    )
    message = rejected(xml)
    assert message.startswith("Element 'start': Has 2 outgoing sequence flows")
    assert "not supported by zeebe-sim" in message


def test_task_without_outgoing_flow() -> None:
    xml = definitions(process(START, task("t"), flow("f1", "start", "t")))
    assert rejected(xml) == (
        "Element 't': Must have exactly one outgoing sequence flow, found none"
    )


def test_end_event_with_outgoing_flow() -> None:
    xml = definitions(
        process(
            START,
            END,
            task("t"),
            flow("f1", "start", "end"),
            flow("f2", "end", "t"),
            flow("f3", "t", "end"),
        )
    )
    assert "An end event must not have outgoing sequence flows" in rejected(xml)


def test_unreachable_nodes_are_listed() -> None:
    xml = definitions(
        process(
            START,
            END,
            task("island"),
            '<bpmn:endEvent id="end2" />',
            flow("f1", "start", "end"),
            flow("f2", "island", "end2"),
        )
    )
    assert rejected(xml) == (
        "Process 'p': Elements not reachable from the start event 'start': 'island', 'end2'"
    )


@pytest.mark.parametrize(
    ("source", "target", "role", "ref"),
    [("ghost", "end", "sourceRef", "ghost"), ("start", "ghost", "targetRef", "ghost")],
)
def test_dangling_sequence_flow(source: str, target: str, role: str, ref: str) -> None:
    xml = definitions(process(START, END, flow("f", source, target)))
    assert rejected(xml) == f"Sequence flow 'f': {role} '{ref}' is not a flow node of process 'p'"


def test_sequence_flow_to_a_flow_is_dangling() -> None:
    """A ref to an element that exists but is not a flow node is just as invalid."""
    xml = definitions(process(START, END, flow("f", "start", "end"), flow("g", "f", "end")))
    assert "sourceRef 'f' is not a flow node" in rejected(xml)


def test_sequence_flow_without_refs() -> None:
    xml = definitions(process(START, END, '<bpmn:sequenceFlow id="f" sourceRef="start" />'))
    assert "must have both a sourceRef and a targetRef" in rejected(xml)


def test_duplicate_ids() -> None:
    xml = definitions(process(START, END, flow("start", "start", "end")))
    assert rejected(xml) == "Duplicate id 'start': ids must be unique in a resource"


def test_flow_node_without_id() -> None:
    xml = definitions(process("<bpmn:startEvent />", END))
    assert rejected(xml) == "Element 'startEvent' must have a non-empty id"
