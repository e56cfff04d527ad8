"""BPMN models the client tests deploy."""

from __future__ import annotations


def service_task_bpmn(process_id: str, job_type: str, retries: int = 3) -> bytes:
    """start -> service task (``job_type``, ``retries``) -> end."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" '
        'xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="defs" '
        'targetNamespace="http://bpmn.io/schema/bpmn">'
        f'<bpmn:process id="{process_id}" isExecutable="true">'
        '<bpmn:startEvent id="start" />'
        '<bpmn:serviceTask id="task"><bpmn:extensionElements>'
        f'<zeebe:taskDefinition type="{job_type}" retries="{retries}" />'
        "</bpmn:extensionElements></bpmn:serviceTask>"
        '<bpmn:endEvent id="end" />'
        '<bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="task" />'
        '<bpmn:sequenceFlow id="f2" sourceRef="task" targetRef="end" />'
        "</bpmn:process></bpmn:definitions>"
    ).encode()
