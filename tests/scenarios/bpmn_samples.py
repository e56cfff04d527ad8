"""Small BPMN models for in-process scenarios (the Modeler-exported ones live in examples/)."""

from __future__ import annotations


def process_xml(
    process_id: str, *, job_type: str | None = "work", message: str | None = "ping"
) -> bytes:
    """start -> [service task] -> [message catch on =key] -> end."""
    elements = ['<bpmn:startEvent id="start" />']
    flows = []
    previous = "start"
    if job_type is not None:
        elements.append(
            '<bpmn:serviceTask id="task"><bpmn:extensionElements>'
            f'<zeebe:taskDefinition type="{job_type}" />'
            "</bpmn:extensionElements></bpmn:serviceTask>"
        )
        flows.append((previous, "task"))
        previous = "task"
    if message is not None:
        elements.append(
            '<bpmn:intermediateCatchEvent id="wait">'
            '<bpmn:messageEventDefinition messageRef="msg" /></bpmn:intermediateCatchEvent>'
        )
        flows.append((previous, "wait"))
        previous = "wait"
    elements.append('<bpmn:endEvent id="end" />')
    flows.append((previous, "end"))
    flow_xml = "".join(
        f'<bpmn:sequenceFlow id="flow{i}" sourceRef="{s}" targetRef="{t}" />'
        for i, (s, t) in enumerate(flows)
    )
    message_xml = (
        f'<bpmn:message id="msg" name="{message}"><bpmn:extensionElements>'
        '<zeebe:subscription correlationKey="=key" /></bpmn:extensionElements></bpmn:message>'
        if message is not None
        else ""
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" '
        'xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="defs" '
        'targetNamespace="http://bpmn.io/schema/bpmn">'
        f'<bpmn:process id="{process_id}" isExecutable="true">{"".join(elements)}{flow_xml}'
        f"</bpmn:process>{message_xml}</bpmn:definitions>"
    ).encode()
