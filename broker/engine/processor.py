"""The engine: turns one command into follow-up records, a response and messages to send.

Theory of operation
-------------------
``Engine.process(command)`` is plain synchronous code. It reads state, writes follow-up events
(each applied to state at once by ``appliers.apply_event``, as Zeebe's event appliers are),
and returns a :class:`ProcessingResult` whose effects the partition shell carries out after the
records are durable: answer the requester, send inter-partition commands, start a backup.
Processing depends only on state and the command (its timestamp included), never on the clock,
so replaying a log reproduces the same state and keys.

Cross-partition work follows Zeebe (REFERENCE.md §3): every step that crosses partitions is a
command sent to the other partition. Sends that must eventually arrive carry a ``retry_key``; the
shell re-sends them with backoff until a later command resolves that key (an acknowledgement).
Receivers are idempotent, so duplicates, reordering and loss all end in the same state. What is
still pending is always derivable from state (:meth:`Engine.pending_sends`), so a restarted or
restored partition simply sends it again.

Errors are contained per command (Zeebe's rule): if a processor or an applier raises, or the
follow-up records cannot be encoded for the log, the command's state changes are rolled back
(``State.rollback_command``) and the command is answered with a ``PROCESSING_ERROR`` rejection
and an ``ERROR`` record instead; processing goes on with the next command. Replay needs nothing
special: those records name the command as their source, so it counts as processed.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable, Iterator
from typing import Any

import attrs
import msgpack

from broker.engine import appliers
from broker.engine.appliers import message_id_key, sub_key
from broker.engine.bpmn import FlowNode, ProcessModel, parse_bpmn
from broker.engine.state import State
from zeebe_sim.ground.backups import CheckpointInfo, CheckpointType
from zeebe_sim.ground.errors import ZeebeSimError
from zeebe_sim.ground.ids import PartitionId, encode_key, partition_of_key
from zeebe_sim.ground.protocol import FRAME_BYTES_MAX
from zeebe_sim.ground.records import Record, RecordType, ValueType, encode_records
from zeebe_sim.ground.routing import subscription_partition_id

DEPLOYMENT_PARTITION = 1
# Per process, and once per deployment: what a distribution carries beside resources, models,
# ids and names (field names, checksums, keys, versions, the frame envelope), with room to spare.
DISTRIBUTION_OVERHEAD_BYTES = 512
RetryKey = tuple[Any, ...]


@attrs.frozen
class Send:
    """An inter-partition command to deliver to ``receiver_partition_id``."""

    receiver_partition_id: int
    value_type: str
    intent: str
    key: int
    value: dict[str, Any]
    retry_key: RetryKey | None = None  # None: sent once; the other side's retry covers loss


@attrs.frozen
class TakeBackup:
    """Take the backup of the checkpoint just created."""

    checkpoint_id: int
    checkpoint_position: int
    checkpoint_type: CheckpointType
    checkpoint_timestamp_ms: int


@attrs.frozen
class SyncMetadata:
    """Write the partition's checkpoints and ranges to the store's metadata."""


@attrs.frozen
class RemoveBackup:
    """Delete the backup from the store (it already left the state)."""

    checkpoint_id: int


BackupWork = TakeBackup | SyncMetadata | RemoveBackup


def checkpoint_info(value: dict[str, Any]) -> CheckpointInfo:
    """A checkpoint as the state keeps it, in the shared vocabulary."""
    first = value.get("firstLogPosition")
    return CheckpointInfo(
        checkpoint_id=value["checkpointId"],
        checkpoint_type=CheckpointType(value["checkpointType"]),
        checkpoint_position=value["checkpointPosition"],
        checkpoint_timestamp_ms=value["checkpointTimestamp"],
        first_log_position=first if first is not None and first >= 0 else None,
    )


@attrs.frozen
class Response:
    key: int
    value_type: str
    intent: str
    value: dict[str, Any]
    rejection_type: str | None = None
    rejection_reason: str | None = None


@attrs.define
class ProcessingResult:
    records: list[Record] = attrs.Factory(list)
    response: Response | None = None
    sends: list[Send] = attrs.Factory(list)
    resolved: list[RetryKey] = attrs.Factory(list)
    # backup work to start once the records are durable (take, sync metadata, delete)
    backup_work: list[BackupWork] = attrs.Factory(list)
    # ``records`` encoded as one log entry (empty when there are none)
    payload: bytes = b""
    # the unexpected error the command was rejected for (PROCESSING_ERROR), for the shell's log
    error: Exception | None = None
    # What requests parked on the partition may be waiting for, now true: ("jobs", type) when
    # a job of that type became activatable, ("instance", key) when an instance ended.
    wakeups: set[tuple[str, Any]] = attrs.Factory(set)


class _Rejected(Exception):
    def __init__(self, rejection_type: str, reason: str) -> None:
        super().__init__(reason)
        self.rejection_type = rejection_type
        self.reason = reason


class _Context:
    """Collects the follow-up records of one command, applying each event as it is written."""

    def __init__(self, engine: Engine, command: Record, first_position: int) -> None:
        self.engine = engine
        self.command = command
        self.first_position = first_position
        self.result = ProcessingResult()

    def event(self, value_type: str, intent: str, key: int, value: dict[str, Any]) -> Record:
        record = Record(
            position=self.first_position + len(self.result.records),
            source_position=self.command.position,
            key=key,
            timestamp_ms=self.command.timestamp_ms,
            record_type=RecordType.EVENT,
            value_type=value_type,
            intent=intent,
            value=value,
        )
        self.result.records.append(record)
        state = self.engine.state
        appliers.apply_event(state, record)
        if value_type == ValueType.JOB or (value_type, intent) == (ValueType.INCIDENT, "RESOLVED"):
            job = state.jobs.get(key if value_type == ValueType.JOB else value.get("jobKey", -1))
            if job is not None and job["state"] == "ACTIVATABLE":
                self.result.wakeups.add(("jobs", job["type"]))
        elif (
            value_type == ValueType.PROCESS_INSTANCE
            and intent in ("ELEMENT_COMPLETED", "ELEMENT_TERMINATED")
            and value["bpmnElementType"] == "PROCESS"
        ):
            self.result.wakeups.add(("instance", key))
        return record

    def rejection(self, rejection_type: str, reason: str) -> None:
        command = self.command
        self.result.records.append(
            Record(
                position=self.first_position + len(self.result.records),
                source_position=command.position,
                key=command.key,
                timestamp_ms=command.timestamp_ms,
                record_type=RecordType.COMMAND_REJECTION,
                value_type=command.value_type,
                intent=command.intent,
                value=command.value,
                rejection_type=rejection_type,
                rejection_reason=reason,
            )
        )

    def respond(self, intent: str, key: int, value: dict[str, Any]) -> None:
        self.result.response = Response(key, self.command.value_type, intent, value)

    def send(
        self,
        partition: int,
        value_type: str,
        intent: str,
        key: int,
        value: dict[str, Any],
        retry_key: RetryKey | None = None,
    ) -> None:
        self.result.sends.append(Send(partition, value_type, intent, key, value, retry_key))

    def new_key(self) -> int:
        # Keys are handed out in order; the applier of the event carrying a key moves the
        # generator past it, so a key used in one event is never handed out again.
        state = self.engine.state
        key = encode_key(PartitionId(state.partition_id), state.next_key_local)
        state.next_key_local += 1
        return key


class Engine:
    def __init__(self, state: State, partition_count: int) -> None:
        self.state = state
        self.partition_id = state.partition_id
        self.partition_count = partition_count
        self._models: dict[int, ProcessModel] = {}
        self._handlers = {
            (ValueType.DEPLOYMENT, "CREATE"): self._deploy,
            (ValueType.COMMAND_DISTRIBUTION, "ACKNOWLEDGE"): self._acknowledge_distribution,
            (ValueType.PROCESS_INSTANCE_CREATION, "CREATE"): self._create_instance,
            # The instance is created the same way; the gateway then waits for its end.
            (
                ValueType.PROCESS_INSTANCE_CREATION,
                "CREATE_WITH_AWAITING_RESULT",
            ): self._create_instance,
            (ValueType.PROCESS_INSTANCE, "CANCEL"): self._cancel_instance,
            (ValueType.VARIABLE_DOCUMENT, "UPDATE"): self._set_variables,
            (ValueType.JOB_BATCH, "ACTIVATE"): self._activate_jobs,
            (ValueType.JOB, "COMPLETE"): self._complete_job,
            (ValueType.JOB, "TIME_OUT"): self._time_out_job,
            (ValueType.JOB, "FAIL"): self._fail_job,
            (ValueType.JOB, "RECUR_AFTER_BACKOFF"): self._recur_job,
            (ValueType.JOB, "THROW_ERROR"): self._throw_error,
            (ValueType.JOB, "UPDATE_RETRIES"): self._update_job_retries,
            (ValueType.JOB, "UPDATE_TIMEOUT"): self._update_job_timeout,
            (ValueType.INCIDENT, "RESOLVE"): self._resolve_incident,
            (ValueType.SIGNAL, "BROADCAST"): self._broadcast_signal,
            (ValueType.MESSAGE_SUBSCRIPTION, "DELETE"): self._delete_message_subscription,
            (ValueType.MESSAGE, "PUBLISH"): self._publish_message,
            (ValueType.MESSAGE, "EXPIRE"): self._expire_message,
            (ValueType.MESSAGE_SUBSCRIPTION, "CREATE"): self._create_message_subscription,
            (ValueType.MESSAGE_SUBSCRIPTION, "CORRELATE"): self._confirm_correlation,
            (ValueType.MESSAGE_SUBSCRIPTION, "REJECT"): self._reject_correlation,
            (ValueType.PROCESS_MESSAGE_SUBSCRIPTION, "CREATE"): self._subscription_opened,
            (ValueType.PROCESS_MESSAGE_SUBSCRIPTION, "CORRELATE"): self._correlate_to_instance,
            (ValueType.CHECKPOINT, "CREATE"): self._create_checkpoint,
            (ValueType.CHECKPOINT, "CONFIRM_BACKUP"): self._confirm_backup,
            (ValueType.CHECKPOINT, "DELETE_BACKUP"): self._delete_backup,
            (ValueType.CHECKPOINT, "RESET_STATE"): self._reset_backup_state,
        }

    # -- entry points -------------------------------------------------------------------------

    def process(self, command: Record, first_position: int | None = None) -> ProcessingResult:
        """Process one command (already at its position in the log); its follow-up records get
        positions from ``first_position`` (default: right after the command).

        Every processed command yields at least one follow-up record, so "the last processed
        position" can be read back from the log after a restart.
        """
        if first_position is None:
            first_position = command.position + 1
        self.state.begin_command()
        try:
            result = self._process(command, first_position)
            # Encoded here, before the changes are kept: a batch the log cannot hold (e.g. an
            # integer beyond msgpack's range) is a failure of this command, not of the partition.
            result.payload = encode_records(result.records)
        except Exception as exc:
            self.state.rollback_command()
            self._models.clear()  # may hold a model whose deployment was just undone
            return self._processing_error(command, first_position, exc)
        self.state.commit_command()
        return result

    def _process(self, command: Record, first_position: int) -> ProcessingResult:
        ctx = _Context(self, command, first_position)
        handler = self._handlers.get((command.value_type, command.intent))
        try:
            if handler is None:
                raise _Rejected(
                    "INVALID_ARGUMENT",
                    f"Command {command.value_type} {command.intent} is not supported",
                )
            handler(ctx)
        except _Rejected as rejected:
            ctx.rejection(rejected.rejection_type, rejected.reason)
            ctx.result.response = Response(
                command.key,
                command.value_type,
                command.intent,
                command.value,
                rejected.rejection_type,
                rejected.reason,
            )
        assert ctx.result.records, f"{command.value_type} {command.intent} wrote no follow-up"
        return ctx.result

    @staticmethod
    def _processing_error(command: Record, first_position: int, exc: Exception) -> ProcessingResult:
        """The records and answer of a command whose processing failed: a PROCESSING_ERROR
        rejection and an ERROR record, nothing else (its effects were rolled back).

        Raises:
            Exception: these records cannot be encoded either (the command itself can, it is in
                the log): the partition cannot go on.
        """
        exception = f"{type(exc).__name__}: {exc}"
        reason = (
            f"Expected to process {command.value_type} {command.intent} at position "
            f"{command.position} without errors, but {exception}"
        )
        rejection = Record(
            position=first_position,
            source_position=command.position,
            key=command.key,
            timestamp_ms=command.timestamp_ms,
            record_type=RecordType.COMMAND_REJECTION,
            value_type=command.value_type,
            intent=command.intent,
            value=command.value,
            rejection_type="PROCESSING_ERROR",
            rejection_reason=reason,
        )
        error = Record(
            position=first_position + 1,
            source_position=command.position,
            key=-1,
            timestamp_ms=command.timestamp_ms,
            record_type=RecordType.EVENT,
            value_type=ValueType.ERROR,
            intent="CREATED",
            # Zeebe's ErrorRecord fields; no applier: an ERROR changes no state
            value={
                "errorEventPosition": command.position,
                "exceptionMessage": exception,
                "processInstanceKey": -1,
            },
        )
        records = [rejection, error]
        return ProcessingResult(
            records=records,
            response=Response(
                command.key,
                command.value_type,
                command.intent,
                command.value,
                "PROCESSING_ERROR",
                reason,
            ),
            payload=encode_records(records),
            error=exc,
        )

    def replay(
        self, records: Iterable[Record], skip_until: int, processed_position: int
    ) -> tuple[int, list[Record]]:
        """Rebuild state from a log read after a snapshot.

        Applies the events after ``skip_until`` (the snapshot's last follow-up event position)
        and returns the last processed position and the commands written but never processed
        (they are a suffix of the log: commands are processed in log order).
        """
        commands: list[Record] = []
        state, apply_event = self.state, appliers.apply_event  # followers run this hot
        for record in records:
            if record.position <= skip_until:
                continue
            record_type = record.record_type
            if record_type == RecordType.COMMAND:
                commands.append(record)
                continue
            if record_type == RecordType.EVENT:
                apply_event(state, record)
                state.commit_command()  # nothing to undo in replay: keep no journal
            if record.source_position > processed_position:
                processed_position = record.source_position
        return processed_position, [c for c in commands if c.position > processed_position]

    def due_commands(self, now_ms: int) -> list[tuple[str, str, int]]:
        """Commands the shell should write because a deadline passed: job time-outs, the end of
        a job's retry back-off and message expiry, as ``(value_type, intent, key)``. Stale heap
        entries are dropped here."""
        due: list[tuple[str, str, int]] = []
        jobs = self.state.job_deadlines
        while jobs and jobs[0][0] <= now_ms:
            deadline, key = heapq.heappop(jobs)
            job = self.state.jobs.get(key)
            if job is not None and job["state"] == "ACTIVATED" and job["deadline"] == deadline:
                due.append((ValueType.JOB, "TIME_OUT", key))
        backoffs = self.state.job_backoffs
        while backoffs and backoffs[0][0] <= now_ms:
            recur_at, key = heapq.heappop(backoffs)
            job = self.state.jobs.get(key)
            if job is not None and job["state"] == "FAILED" and job.get("recurAt") == recur_at:
                due.append((ValueType.JOB, "RECUR_AFTER_BACKOFF", key))
        messages = self.state.message_deadlines
        while messages and messages[0][0] <= now_ms:
            deadline, key = heapq.heappop(messages)
            message = self.state.messages.get(key)
            if message is not None and message["deadline"] == deadline:
                due.append((ValueType.MESSAGE, "EXPIRE", key))
        return due

    def pending_sends(self) -> Iterator[Send]:
        """Every send still waiting for its acknowledgement, derived from state (for a
        partition that just started, where the shell's retry table is empty)."""
        state = self.state
        for deployment_key, partitions in state.distributions.items():
            for partition in partitions:
                yield self._distribution_send(deployment_key, partition)
        for subscription in state.process_subscriptions.values():
            if subscription["state"] == "CREATING":
                yield self._open_subscription_send(subscription)
        for subscription in state.message_subscriptions.values():
            if subscription["state"] == "CORRELATING":
                yield self._correlate_send(subscription)

    # -- deployments --------------------------------------------------------------------------

    def _deploy(self, ctx: _Context) -> None:
        command = ctx.command
        if command.value.get("distributed"):
            self._apply_distributed_deployment(ctx)
            return
        if self.partition_id != DEPLOYMENT_PARTITION:
            raise _Rejected("INVALID_ARGUMENT", "Deployments are processed on partition 1")
        resources = command.value.get("resources") or []
        if not resources:
            raise _Rejected(
                "INVALID_ARGUMENT", "Expected to deploy at least one resource, but none given"
            )
        parsed: list[tuple[str, bytes, list[ProcessModel]]] = []
        errors: list[str] = []
        for resource in resources:
            name, content = resource["resourceName"], resource["resource"]
            try:
                parsed.append((name, content, parse_bpmn(content, name)))
            except ZeebeSimError as exc:
                errors.append(f"'{name}': {exc.message}")
        if errors:
            raise _Rejected(
                "INVALID_ARGUMENT",
                "Expected to deploy new resources, but encountered the following errors:\n"
                + "\n".join(errors),
            )
        # Refused before anything is written: the deployment travels to every other partition
        # in one frame, and one that cannot be sent would never be distributed.
        # Each process travels with its model and, in its metadata, its id and resource name.
        distribution_bytes = len(
            msgpack.packb(
                [[n, c, [[m.to_dict(), m.bpmn_process_id, n] for m in ms]] for n, c, ms in parsed],
                use_bin_type=True,
            )
        ) + DISTRIBUTION_OVERHEAD_BYTES * (1 + sum(len(ms) for *_, ms in parsed))
        if distribution_bytes > FRAME_BYTES_MAX:
            raise _Rejected(
                "INVALID_ARGUMENT",
                f"Expected to deploy resources that can be distributed to all partitions in one "
                f"message of at most {FRAME_BYTES_MAX} bytes, but this deployment needs "
                f"{distribution_bytes} bytes: deploy fewer or smaller resources at a time",
            )
        deployment_key = ctx.new_key()
        metadata: list[dict[str, Any]] = []
        for name, content, models in parsed:
            checksum = hashlib.sha256(content).hexdigest()
            for model in models:
                latest_key = self.state.latest_process.get(model.bpmn_process_id)
                latest = self.state.processes.get(latest_key) if latest_key else None
                if latest is not None and latest["checksum"] == checksum:
                    metadata.append(self._process_metadata(latest_key or 0, latest, True))
                    continue
                process = {
                    "bpmnProcessId": model.bpmn_process_id,
                    "version": (latest["version"] + 1) if latest else 1,
                    "resourceName": name,
                    "checksum": checksum,
                    "deploymentKey": deployment_key,
                    "model": model.to_dict(),
                }
                key = ctx.new_key()
                ctx.event(ValueType.PROCESS, "CREATED", key, process)
                metadata.append(self._process_metadata(key, process, False))
        deployment = {
            "deploymentKey": deployment_key,
            "resources": [{"resourceName": n, "resource": c} for n, c, _ in parsed],
            "processesMetadata": metadata,
        }
        ctx.event(ValueType.DEPLOYMENT, "CREATED", deployment_key, deployment)
        ctx.respond("CREATED", deployment_key, _without(deployment, "resources"))
        others = [p for p in range(1, self.partition_count + 1) if p != self.partition_id]
        if others:
            ctx.event(
                ValueType.COMMAND_DISTRIBUTION,
                "STARTED",
                deployment_key,
                {"valueType": ValueType.DEPLOYMENT, "partitions": others},
            )
            ctx.result.sends.extend(self._distribution_send(deployment_key, p) for p in others)

    @staticmethod
    def _process_metadata(key: int, process: dict[str, Any], duplicate: bool) -> dict[str, Any]:
        return {
            "processDefinitionKey": key,
            "bpmnProcessId": process["bpmnProcessId"],
            "version": process["version"],
            "resourceName": process["resourceName"],
            "checksum": process["checksum"],
            "isDuplicate": duplicate,
        }

    def _distribution_send(self, deployment_key: int, partition: int) -> Send:
        deployment = self.state.deployments[deployment_key]
        processes = {
            str(m["processDefinitionKey"]): self.state.processes[m["processDefinitionKey"]]
            for m in deployment["processesMetadata"]
        }
        return Send(
            partition,
            ValueType.DEPLOYMENT,
            "CREATE",
            deployment_key,
            {"distributed": True, "deployment": deployment, "processes": processes},
            retry_key=("distribution", deployment_key, partition),
        )

    def _apply_distributed_deployment(self, ctx: _Context) -> None:
        command = ctx.command
        deployment_key = command.key
        ack = {"partitionId": self.partition_id, "distributionKey": deployment_key}
        # Acknowledge every copy, also a duplicate: the first acknowledgement may have been lost.
        ctx.send(
            partition_of_key(deployment_key),
            ValueType.COMMAND_DISTRIBUTION,
            "ACKNOWLEDGE",
            deployment_key,
            ack,
        )
        if deployment_key in self.state.deployments:
            raise _Rejected(
                "ALREADY_EXISTS", f"Deployment {deployment_key} was already distributed here"
            )
        for key, process in sorted(command.value["processes"].items()):
            if int(key) not in self.state.processes:
                ctx.event(ValueType.PROCESS, "CREATED", int(key), process)
        ctx.event(ValueType.DEPLOYMENT, "CREATED", deployment_key, command.value["deployment"])

    def _acknowledge_distribution(self, ctx: _Context) -> None:
        key = ctx.command.key
        partition = ctx.command.value["partitionId"]
        ctx.result.resolved.append(("distribution", key, partition))
        if partition not in self.state.distributions.get(key, ()):
            raise _Rejected("NOT_FOUND", f"No pending distribution of {key} to {partition}")
        value = {"partitionId": partition, "valueType": ValueType.DEPLOYMENT}
        ctx.event(ValueType.COMMAND_DISTRIBUTION, "ACKNOWLEDGED", key, value)
        if not self.state.distributions[key]:
            ctx.event(ValueType.COMMAND_DISTRIBUTION, "FINISHED", key, value)

    # -- process instances --------------------------------------------------------------------

    def _model(self, process_definition_key: int) -> ProcessModel:
        model = self._models.get(process_definition_key)
        if model is None:
            model = ProcessModel.from_dict(self.state.processes[process_definition_key]["model"])
            self._models[process_definition_key] = model
        return model

    def _create_instance(self, ctx: _Context) -> None:
        value = ctx.command.value
        variables = value.get("variables") or {}
        if not isinstance(variables, dict):
            raise _Rejected("INVALID_ARGUMENT", "Expected variables to be a JSON object")
        definition_key = value.get("processDefinitionKey") or -1
        if definition_key > 0:
            if definition_key not in self.state.processes:
                raise _Rejected(
                    "NOT_FOUND",
                    f"Expected to find process definition with key '{definition_key}', "
                    "but none found",
                )
        else:
            process_id = value.get("bpmnProcessId", "")
            found = self.state.latest_process.get(process_id)
            version = value.get("version", -1)
            if found is not None and version not in (-1, None):
                found = next(
                    (
                        k
                        for k, p in self.state.processes.items()
                        if p["bpmnProcessId"] == process_id and p["version"] == version
                    ),
                    None,
                )
            if found is None:
                raise _Rejected(
                    "NOT_FOUND",
                    f"Expected to find process definition with process ID '{process_id}', "
                    "but none found",
                )
            definition_key = found
        process = self.state.processes[definition_key]
        instance_key = ctx.new_key()
        created = {
            "processInstanceKey": instance_key,
            "bpmnProcessId": process["bpmnProcessId"],
            "version": process["version"],
            "processDefinitionKey": definition_key,
            "variables": variables,
        }
        ctx.event(ValueType.PROCESS_INSTANCE_CREATION, "CREATED", instance_key, created)
        ctx.event(
            ValueType.PROCESS_INSTANCE,
            "ELEMENT_ACTIVATED",
            instance_key,
            {
                **self._element_value(instance_key, process, definition_key, "PROCESS", None),
                "variables": variables,
            },
        )
        model = self._model(definition_key)
        self._run_from(ctx, instance_key, model.nodes[model.start_node])
        ctx.respond("CREATED", instance_key, created)

    @staticmethod
    def _element_value(
        instance_key: int,
        process: dict[str, Any],
        definition_key: int,
        element_type: str,
        element_id: str | None,
    ) -> dict[str, Any]:
        return {
            "processInstanceKey": instance_key,
            "bpmnProcessId": process["bpmnProcessId"],
            "version": process["version"],
            "processDefinitionKey": definition_key,
            "bpmnElementType": element_type,
            "elementId": element_id or process["bpmnProcessId"],
        }

    def _run_from(self, ctx: _Context, instance_key: int, node: FlowNode | None) -> None:
        """Activate ``node`` and continue through every element that does not wait."""
        instance = self.state.instances[instance_key]
        definition_key = instance["processDefinitionKey"]
        process = self.state.processes[definition_key]
        model = self._model(definition_key)
        while node is not None:
            element_key = ctx.new_key()
            element = self._element_value(
                instance_key, process, definition_key, _ELEMENT_TYPES[node.kind], node.id
            )
            ctx.event(ValueType.PROCESS_INSTANCE, "ELEMENT_ACTIVATED", element_key, element)
            if node.kind == "serviceTask":
                job = {
                    "type": node.job_type,
                    "retries": node.job_retries,
                    "processInstanceKey": instance_key,
                    "elementInstanceKey": element_key,
                    "elementId": node.id,
                    "bpmnProcessId": process["bpmnProcessId"],
                    "processDefinitionKey": definition_key,
                    "processDefinitionVersion": process["version"],
                    "customHeaders": {},
                }
                ctx.event(ValueType.JOB, "CREATED", ctx.new_key(), job)
                return
            if node.kind == "messageCatchEvent":
                self._open_subscription(ctx, instance_key, element_key, node)
                return
            ctx.event(ValueType.PROCESS_INSTANCE, "ELEMENT_COMPLETED", element_key, element)
            node = self._take_flow(ctx, instance_key, process, definition_key, model, node)
        process_value = self._element_value(instance_key, process, definition_key, "PROCESS", None)
        ctx.event(ValueType.PROCESS_INSTANCE, "ELEMENT_COMPLETED", instance_key, process_value)

    def _take_flow(
        self,
        ctx: _Context,
        instance_key: int,
        process: dict[str, Any],
        definition_key: int,
        model: ProcessModel,
        node: FlowNode,
    ) -> FlowNode | None:
        if node.outgoing is None:
            return None
        flow = self._element_value(
            instance_key, process, definition_key, "SEQUENCE_FLOW", node.outgoing_flow
        )
        ctx.event(ValueType.PROCESS_INSTANCE, "SEQUENCE_FLOW_TAKEN", ctx.new_key(), flow)
        return model.nodes[node.outgoing]

    def _complete_element(
        self, ctx: _Context, instance_key: int, element_key: int, variables: dict[str, Any]
    ) -> None:
        """Complete the waiting element of an instance and continue after it."""
        instance = self.state.instances[instance_key]
        definition_key = instance["processDefinitionKey"]
        process = self.state.processes[definition_key]
        model = self._model(definition_key)
        node = model.nodes[instance["elementId"]]
        element = self._element_value(
            instance_key, process, definition_key, _ELEMENT_TYPES[node.kind], node.id
        )
        ctx.event(
            ValueType.PROCESS_INSTANCE,
            "ELEMENT_COMPLETED",
            element_key,
            {**element, "variables": variables},
        )
        following = self._take_flow(ctx, instance_key, process, definition_key, model, node)
        self._run_from(ctx, instance_key, following)

    # -- jobs ---------------------------------------------------------------------------------

    def _activate_jobs(self, ctx: _Context) -> None:
        value = ctx.command.value
        job_type, worker = value["type"], value.get("worker", "")
        timeout_ms, max_jobs = value["timeout"], value["maxJobsToActivate"]
        keys = list(self.state.activatable_jobs.get(job_type, {}))[:max_jobs]
        deadline = ctx.command.timestamp_ms + timeout_ms
        jobs = []
        for key in keys:
            job = self.state.jobs[key]
            instance = self.state.instances[job["processInstanceKey"]]
            jobs.append(
                {
                    **_without(job, "state"),
                    "jobKey": key,
                    "deadline": deadline,
                    "worker": worker,
                    "variables": {
                        **instance["variables"],
                        **(instance.get("localVariables") or {}),
                    },
                }
            )
        batch = {
            "type": job_type,
            "worker": worker,
            "timeout": timeout_ms,
            "deadline": deadline,
            "jobKeys": keys,
        }
        ctx.event(ValueType.JOB_BATCH, "ACTIVATED", ctx.new_key(), batch)
        ctx.respond("ACTIVATED", -1, {**batch, "jobs": jobs})

    def _job(self, ctx: _Context, action: str, states: tuple[str, ...]) -> dict[str, Any]:
        """The command's job, in one of ``states`` (Zeebe's job precondition checks)."""
        key = ctx.command.key
        job = self.state.jobs.get(key)
        if job is None:
            raise _Rejected(
                "NOT_FOUND", f"Expected to {action} job with key '{key}', but no such job was found"
            )
        if job["state"] not in states:
            raise _Rejected(
                "INVALID_STATE",
                f"Expected to {action} job with key '{key}', but it is in state '{job['state']}'",
            )
        return job

    @staticmethod
    def _document(ctx: _Context) -> dict[str, Any]:
        variables = ctx.command.value.get("variables") or {}
        if not isinstance(variables, dict):
            raise _Rejected("INVALID_ARGUMENT", "Expected variables to be a JSON object")
        return variables

    def _complete_job(self, ctx: _Context) -> None:
        key = ctx.command.key
        job = self._job(ctx, "complete", ("ACTIVATABLE", "ACTIVATED"))
        variables = self._document(ctx)
        completed = {**_without(job, "state"), "variables": variables}
        ctx.event(ValueType.JOB, "COMPLETED", key, completed)
        self._complete_element(ctx, job["processInstanceKey"], job["elementInstanceKey"], variables)
        ctx.respond("COMPLETED", key, completed)

    def _fail_job(self, ctx: _Context) -> None:
        key = ctx.command.key
        job = self._job(ctx, "fail", ("ACTIVATED",))
        value = ctx.command.value
        retries = int(value.get("retries", 0))
        backoff_ms = int(value.get("retryBackOff", 0))
        message = str(value.get("errorMessage", ""))
        recur_at = ctx.command.timestamp_ms + backoff_ms if retries > 0 and backoff_ms > 0 else -1
        failed = {
            **_without(job, "state", "recurAt"),
            "retries": retries,
            "errorMessage": message,
            "retryBackOff": backoff_ms,
            "recurAt": recur_at,
            "variables": self._document(ctx),
        }
        ctx.event(ValueType.JOB, "FAILED", key, failed)
        if retries <= 0:
            self._raise_incident(
                ctx,
                job["processInstanceKey"],
                "JOB_NO_RETRIES",
                message or "No more retries left.",
                job_key=key,
            )
        ctx.respond("FAILED", key, failed)

    def _recur_job(self, ctx: _Context) -> None:
        key = ctx.command.key
        job = self._job(ctx, "recur after back-off", ("FAILED",))
        ctx.event(ValueType.JOB, "RECURRED_AFTER_BACKOFF", key, _without(job, "state"))

    def _throw_error(self, ctx: _Context) -> None:
        """An error thrown by a worker. The BPMN subset has no error catch events, so nothing
        can catch it: the job stays, with an incident, as in Zeebe when no catch event in the
        scope matches the code."""
        key = ctx.command.key
        job = self._job(ctx, "throw an error for", ("ACTIVATABLE", "ACTIVATED"))
        value = ctx.command.value
        code = str(value.get("errorCode", ""))
        message = str(value.get("errorMessage", ""))
        thrown = {
            **_without(job, "state"),
            "errorCode": code,
            "errorMessage": message,
            "variables": self._document(ctx),
        }
        ctx.event(ValueType.JOB, "ERROR_THROWN", key, thrown)
        self._raise_incident(
            ctx,
            job["processInstanceKey"],
            "UNHANDLED_ERROR_EVENT",
            f"Expected to throw an error event with the code '{code}' with message '{message}', "
            "but it was not caught. No error events are available in the scope.",
            job_key=key,
        )
        ctx.respond("ERROR_THROWN", key, thrown)

    def _update_job_retries(self, ctx: _Context) -> None:
        key = ctx.command.key
        retries = ctx.command.value.get("retries", 0)
        if not isinstance(retries, int) or retries <= 0:
            raise _Rejected(
                "INVALID_ARGUMENT",
                f"Expected to update retries for job with key '{key}' with a positive amount of "
                f"retries, but the amount given was '{retries}'",
            )
        job = self.state.jobs.get(key)
        if job is None:
            raise _Rejected(
                "NOT_FOUND",
                f"Expected to update retries for job with key '{key}', but no such job was found",
            )
        updated = {**_without(job, "state"), "retries": retries}
        ctx.event(ValueType.JOB, "RETRIES_UPDATED", key, updated)
        ctx.respond("RETRIES_UPDATED", key, updated)

    def _update_job_timeout(self, ctx: _Context) -> None:
        key = ctx.command.key
        timeout_ms = ctx.command.value.get("timeout", 0)
        job = self.state.jobs.get(key)
        if job is None:
            raise _Rejected(
                "NOT_FOUND",
                f"Expected to update the timeout of job with key '{key}', but no such job was "
                "found",
            )
        if job["state"] != "ACTIVATED":
            raise _Rejected(
                "INVALID_STATE",
                f"Expected to update the timeout of job with key '{key}', but it is not active",
            )
        updated = {
            **_without(job, "state"),
            "timeout": timeout_ms,
            "deadline": ctx.command.timestamp_ms + timeout_ms,
        }
        ctx.event(ValueType.JOB, "TIMEOUT_UPDATED", key, updated)
        ctx.respond("TIMEOUT_UPDATED", key, updated)

    def _time_out_job(self, ctx: _Context) -> None:
        key = ctx.command.key
        job = self.state.jobs.get(key)
        if job is None or job["state"] != "ACTIVATED":
            raise _Rejected("NOT_FOUND", f"Expected to time out activated job {key}")
        ctx.event(ValueType.JOB, "TIMED_OUT", key, _without(job, "state"))

    # -- incidents ----------------------------------------------------------------------------

    def _raise_incident(
        self,
        ctx: _Context,
        instance_key: int,
        error_type: str,
        message: str,
        *,
        job_key: int = -1,
    ) -> None:
        """An incident at the instance's waiting element; the instance waits until it is
        resolved."""
        instance = self.state.instances[instance_key]
        incident = {
            "processInstanceKey": instance_key,
            "processDefinitionKey": instance["processDefinitionKey"],
            "bpmnProcessId": instance["bpmnProcessId"],
            "elementId": instance["elementId"],
            "elementInstanceKey": instance["elementInstanceKey"],
            "jobKey": job_key,
            "errorType": error_type,
            "errorMessage": message,
            "creationTime": ctx.command.timestamp_ms,
        }
        ctx.event(ValueType.INCIDENT, "CREATED", ctx.new_key(), incident)

    def _resolve_incident(self, ctx: _Context) -> None:
        key = ctx.command.key
        incident = self.state.incidents.get(key)
        if incident is None:
            raise _Rejected(
                "NOT_FOUND",
                f"Expected to resolve incident with key '{key}', but no such incident was found",
            )
        ctx.event(ValueType.INCIDENT, "RESOLVED", key, incident)
        ctx.respond("RESOLVED", key, incident)
        if incident["errorType"] == "EXTRACT_VALUE_ERROR":
            # The correlation key is evaluated again (e.g. after SetVariables fixed it).
            instance_key = incident["processInstanceKey"]
            model = self._model(incident["processDefinitionKey"])
            node = model.nodes[incident["elementId"]]
            self._open_subscription(ctx, instance_key, incident["elementInstanceKey"], node)

    # -- cancellation and variables -----------------------------------------------------------

    def _cancel_instance(self, ctx: _Context) -> None:
        key = ctx.command.key
        instance = self.state.instances.get(key)
        if instance is None or instance["state"] != "ACTIVE":
            raise _Rejected(
                "NOT_FOUND",
                f"Expected to cancel a process instance with key '{key}', but no such process "
                "was found",
            )
        definition_key = instance["processDefinitionKey"]
        process = self.state.processes[definition_key]
        element_key = instance["elementInstanceKey"]
        if element_key is not None:
            # A scan: jobs are not indexed by element, and cancelling is rare.
            for job_key, job in list(self.state.jobs.items()):
                if job["elementInstanceKey"] == element_key:
                    ctx.event(ValueType.JOB, "CANCELED", job_key, _without(job, "state"))
            subscription = self.state.process_subscriptions.get(element_key)
            if subscription is not None and subscription["state"] != "CORRELATED":
                ctx.event(
                    ValueType.PROCESS_MESSAGE_SUBSCRIPTION, "DELETED", element_key, subscription
                )
                ctx.result.resolved.append(("open", element_key))
                # Sent once: if it is lost, the subscription stays on the message partition
                # until a message correlates to it, which this partition then rejects.
                ctx.send(
                    subscription["messagePartitionId"],
                    ValueType.MESSAGE_SUBSCRIPTION,
                    "DELETE",
                    element_key,
                    {"elementInstanceKey": element_key, "messageName": subscription["messageName"]},
                )
        for incident_key, incident in list(self.state.incidents.items()):
            if incident["processInstanceKey"] == key:
                ctx.event(ValueType.INCIDENT, "RESOLVED", incident_key, incident)
        if element_key is not None:
            node = self._model(definition_key).nodes[instance["elementId"]]
            element = self._element_value(
                key, process, definition_key, _ELEMENT_TYPES[node.kind], node.id
            )
            ctx.event(ValueType.PROCESS_INSTANCE, "ELEMENT_TERMINATED", element_key, element)
        process_value = self._element_value(key, process, definition_key, "PROCESS", None)
        ctx.event(ValueType.PROCESS_INSTANCE, "ELEMENT_TERMINATED", key, process_value)
        ctx.respond("CANCELING", key, process_value)

    def _set_variables(self, ctx: _Context) -> None:
        value = ctx.command.value
        scope_key = value.get("scopeKey", -1)
        variables = self._document(ctx)
        instance = self.state.instances.get(scope_key)
        if instance is None:
            # An element scope: a scan, since elements are not indexed and this is rare.
            instance = next(
                (
                    i
                    for i in self.state.instances.values()
                    if i["elementInstanceKey"] == scope_key and i["state"] == "ACTIVE"
                ),
                None,
            )
        if instance is None or instance["state"] != "ACTIVE":
            raise _Rejected(
                "NOT_FOUND",
                f"Expected to update variables for element with key '{scope_key}', but no such "
                "element was found",
            )
        document = {
            "scopeKey": scope_key,
            "processInstanceKey": instance["processInstanceKey"],
            "updateSemantics": "LOCAL" if value.get("local") else "PROPAGATE",
            "variables": variables,
        }
        key = ctx.new_key()
        ctx.event(ValueType.VARIABLE_DOCUMENT, "UPDATED", key, document)
        ctx.respond("UPDATED", key, document)

    def _broadcast_signal(self, ctx: _Context) -> None:
        """Recorded and answered with its key. Signal catch events are not in the BPMN subset,
        so nothing can be waiting: that is Zeebe's answer when nothing waits."""
        value = ctx.command.value
        signal = {
            "signalName": str(value.get("signalName", "")),
            "variables": self._document(ctx),
        }
        key = ctx.new_key()
        ctx.event(ValueType.SIGNAL, "BROADCASTED", key, signal)
        ctx.respond("BROADCASTED", key, signal)

    # -- messages: the message partition ------------------------------------------------------

    def _publish_message(self, ctx: _Context) -> None:
        value = ctx.command.value
        name, correlation_key = value["name"], value["correlationKey"]
        message_id = value.get("messageId") or ""
        if message_id and message_id_key(name, correlation_key, message_id) in (
            self.state.message_ids
        ):
            raise _Rejected(
                "ALREADY_EXISTS",
                f"Expected to publish a new message with id '{message_id}', but a message "
                "with that id was already published",
            )
        ttl = max(0, value.get("timeToLive", 0))
        message = {
            "name": name,
            "correlationKey": correlation_key,
            "timeToLive": ttl,
            "messageId": message_id,
            "variables": value.get("variables") or {},
            "deadline": ctx.command.timestamp_ms + ttl,
        }
        message_key = ctx.new_key()
        ctx.event(ValueType.MESSAGE, "PUBLISHED", message_key, message)
        ctx.respond("PUBLISHED", message_key, message)
        self._correlate_message(ctx, message_key)
        if ttl == 0:
            # Zeebe: a message with no time to live correlates only to what waits right now.
            ctx.event(ValueType.MESSAGE, "EXPIRED", message_key, message)

    def _correlate_message(self, ctx: _Context, message_key: int) -> None:
        """Correlate a buffered message to every open subscription waiting for it (once per
        process id)."""
        message = self.state.messages[message_key]
        name_key = (message["name"], message["correlationKey"])
        for key in list(self.state.subscriptions_by_name_key.get(name_key, ())):
            subscription = self.state.message_subscriptions[key]
            if subscription["state"] == "OPENED" and subscription[
                "bpmnProcessId"
            ] not in self.state.correlated.get(message_key, ()):
                self._start_correlation(ctx, subscription, message_key, message)

    def _start_correlation(
        self,
        ctx: _Context,
        subscription: dict[str, Any],
        message_key: int,
        message: dict[str, Any],
    ) -> None:
        value = {**subscription, "messageKey": message_key, "variables": message["variables"]}
        ctx.event(ValueType.MESSAGE_SUBSCRIPTION, "CORRELATING", ctx.command.key, value)
        key = sub_key(subscription["elementInstanceKey"], subscription["messageName"])
        ctx.result.sends.append(self._correlate_send(self.state.message_subscriptions[key]))

    def _correlate_send(self, subscription: dict[str, Any]) -> Send:
        return Send(
            partition_of_key(subscription["processInstanceKey"]),
            ValueType.PROCESS_MESSAGE_SUBSCRIPTION,
            "CORRELATE",
            subscription["processInstanceKey"],
            {**_without(subscription, "state"), "messagePartitionId": self.partition_id},
            retry_key=(
                "correlate",
                subscription["elementInstanceKey"],
                subscription["messageName"],
            ),
        )

    def _expire_message(self, ctx: _Context) -> None:
        key = ctx.command.key
        message = self.state.messages.get(key)
        if message is None:
            raise _Rejected("NOT_FOUND", f"Expected to expire message {key}, but it is gone")
        ctx.event(ValueType.MESSAGE, "EXPIRED", key, message)

    def _create_message_subscription(self, ctx: _Context) -> None:
        value = ctx.command.value
        ack_value = {
            "elementInstanceKey": value["elementInstanceKey"],
            "messageName": value["messageName"],
        }
        # Acknowledge every copy: a duplicate means our first acknowledgement was lost.
        ctx.send(
            partition_of_key(value["processInstanceKey"]),
            ValueType.PROCESS_MESSAGE_SUBSCRIPTION,
            "CREATE",
            value["processInstanceKey"],
            ack_value,
        )
        key = sub_key(value["elementInstanceKey"], value["messageName"])
        if key in self.state.message_subscriptions:
            raise _Rejected("INVALID_STATE", "The message subscription already exists")
        ctx.event(ValueType.MESSAGE_SUBSCRIPTION, "CREATED", ctx.command.key, value)
        subscription = self.state.message_subscriptions[key]
        # A buffered message waiting for this subscription correlates now (oldest first).
        name_key = (value["messageName"], value["correlationKey"])
        for message_key in self.state.messages_by_name_key.get(name_key, ()):
            message = self.state.messages[message_key]
            if message["deadline"] > ctx.command.timestamp_ms and value[
                "bpmnProcessId"
            ] not in self.state.correlated.get(message_key, ()):
                self._start_correlation(ctx, subscription, message_key, message)
                break

    def _delete_message_subscription(self, ctx: _Context) -> None:
        value = ctx.command.value
        subscription = self.state.message_subscriptions.get(
            sub_key(value["elementInstanceKey"], value["messageName"])
        )
        if subscription is None or subscription["state"] != "OPENED":
            # A correlating one is cleaned up when the process partition rejects it.
            raise _Rejected("NOT_FOUND", "No open message subscription to delete")
        ctx.event(ValueType.MESSAGE_SUBSCRIPTION, "DELETED", ctx.command.key, subscription)

    def _confirm_correlation(self, ctx: _Context) -> None:
        value = ctx.command.value
        retry = ("correlate", value["elementInstanceKey"], value["messageName"])
        ctx.result.resolved.append(retry)
        subscription = self.state.message_subscriptions.get(
            sub_key(value["elementInstanceKey"], value["messageName"])
        )
        if subscription is None or subscription["messageKey"] != value["messageKey"]:
            raise _Rejected("NOT_FOUND", "No correlating subscription for this confirmation")
        ctx.event(ValueType.MESSAGE_SUBSCRIPTION, "CORRELATED", ctx.command.key, subscription)

    def _reject_correlation(self, ctx: _Context) -> None:
        value = ctx.command.value
        ctx.result.resolved.append(("correlate", value["elementInstanceKey"], value["messageName"]))
        subscription = self.state.message_subscriptions.get(
            sub_key(value["elementInstanceKey"], value["messageName"])
        )
        if (
            subscription is None
            or subscription["state"] != "CORRELATING"
            or subscription["messageKey"] != value["messageKey"]
        ):
            raise _Rejected("NOT_FOUND", "No correlating subscription for this rejection")
        ctx.event(ValueType.MESSAGE_SUBSCRIPTION, "REJECTED", ctx.command.key, subscription)
        if value["messageKey"] in self.state.messages:
            self._correlate_message(ctx, value["messageKey"])

    # -- messages: the process instance's partition -------------------------------------------

    def _open_subscription(
        self, ctx: _Context, instance_key: int, element_key: int, node: FlowNode
    ) -> None:
        instance = self.state.instances[instance_key]
        variable = node.correlation_key_variable or ""
        raw = instance["variables"].get(variable)
        if isinstance(raw, bool) or not isinstance(raw, str | int):
            # Zeebe raises an incident; the instance waits until the variable is fixed and
            # the incident resolved.
            self._raise_incident(
                ctx,
                instance_key,
                "EXTRACT_VALUE_ERROR",
                f"Failed to extract the correlation key for '{variable}': The value must be "
                "either a string or a number",
            )
            return
        correlation_key = str(raw)
        subscription = {
            "processInstanceKey": instance_key,
            "elementInstanceKey": element_key,
            "elementId": node.id,
            "messageName": node.message_name,
            "correlationKey": correlation_key,
            "bpmnProcessId": instance["bpmnProcessId"],
            "messagePartitionId": subscription_partition_id(correlation_key, self.partition_count),
        }
        ctx.event(ValueType.PROCESS_MESSAGE_SUBSCRIPTION, "CREATING", element_key, subscription)
        ctx.result.sends.append(self._open_subscription_send(subscription))

    @staticmethod
    def _open_subscription_send(subscription: dict[str, Any]) -> Send:
        return Send(
            subscription["messagePartitionId"],
            ValueType.MESSAGE_SUBSCRIPTION,
            "CREATE",
            subscription["elementInstanceKey"],
            {
                k: subscription[k]
                for k in (
                    "processInstanceKey",
                    "elementInstanceKey",
                    "messageName",
                    "correlationKey",
                    "bpmnProcessId",
                )
            },
            retry_key=("open", subscription["elementInstanceKey"]),
        )

    def _subscription_opened(self, ctx: _Context) -> None:
        element_key = ctx.command.value["elementInstanceKey"]
        ctx.result.resolved.append(("open", element_key))
        subscription = self.state.process_subscriptions.get(element_key)
        if subscription is None or subscription["state"] != "CREATING":
            raise _Rejected("INVALID_STATE", "The subscription is not being opened")
        ctx.event(ValueType.PROCESS_MESSAGE_SUBSCRIPTION, "CREATED", element_key, subscription)

    def _correlate_to_instance(self, ctx: _Context) -> None:
        value = ctx.command.value
        element_key = value["elementInstanceKey"]
        message_partition = value["messagePartitionId"]
        answer = {
            k: value[k]
            for k in ("elementInstanceKey", "messageName", "messageKey", "bpmnProcessId")
        }
        subscription = self.state.process_subscriptions.get(element_key)
        if subscription is not None and subscription["state"] == "CORRELATED":
            if subscription["messageKey"] == value["messageKey"]:
                # A re-sent CORRELATE: confirm again, the first confirmation may have been lost.
                ctx.send(
                    message_partition,
                    ValueType.MESSAGE_SUBSCRIPTION,
                    "CORRELATE",
                    ctx.command.key,
                    answer,
                )
                raise _Rejected("INVALID_STATE", "The subscription is already correlated")
            subscription = None
        instance = self.state.instances.get(value["processInstanceKey"])
        if (
            subscription is None
            or instance is None
            or instance["elementInstanceKey"] != element_key
        ):
            ctx.send(
                message_partition, ValueType.MESSAGE_SUBSCRIPTION, "REJECT", ctx.command.key, answer
            )
            raise _Rejected(
                "INVALID_STATE",
                f"Expected to correlate subscription for element {element_key}, but the "
                "element is no longer waiting for the message",
            )
        ctx.result.resolved.append(("open", element_key))
        ctx.event(
            ValueType.PROCESS_MESSAGE_SUBSCRIPTION,
            "CORRELATED",
            element_key,
            {**subscription, "messageKey": value["messageKey"], "variables": value["variables"]},
        )
        ctx.send(
            message_partition, ValueType.MESSAGE_SUBSCRIPTION, "CORRELATE", ctx.command.key, answer
        )
        self._complete_element(ctx, value["processInstanceKey"], element_key, value["variables"])

    # -- checkpoints --------------------------------------------------------------------------

    def _create_checkpoint(self, ctx: _Context) -> None:
        """CREATE(id, type), reference A.4. A MARKER advances the checkpoint without a backup.
        A backup request for the id of the latest checkpoint when that is a MARKER (created
        when an inter-partition command carried the id here before the request arrived) takes
        the backup of that checkpoint: without this the partition would have no backup."""
        value = ctx.command.value
        checkpoint_id = value["checkpointId"]
        checkpoint_type = CheckpointType(value.get("checkpointType", CheckpointType.MANUAL_BACKUP))
        state = self.state
        latest = state.backup_info.get("checkpoint")
        if checkpoint_id > state.checkpoint_id:
            created = {
                "checkpointId": checkpoint_id,
                "checkpointPosition": ctx.command.position,
                "checkpointType": checkpoint_type.value,
                "checkpointTimestamp": ctx.command.timestamp_ms,
            }
        elif (
            latest is not None
            and checkpoint_id == latest["checkpointId"]
            and latest["checkpointType"] == CheckpointType.MARKER
            and checkpoint_type.takes_backup
        ):
            created = {**latest, "checkpointType": checkpoint_type.value}
        else:
            ignored = {
                "checkpointId": state.checkpoint_id,
                "checkpointPosition": state.checkpoint_position,
                "checkpointType": (latest or {}).get("checkpointType", checkpoint_type.value),
            }
            ctx.event(ValueType.CHECKPOINT, "IGNORED", checkpoint_id, ignored)
            ctx.respond("IGNORED", checkpoint_id, ignored)
            return
        ctx.event(ValueType.CHECKPOINT, "CREATED", checkpoint_id, created)
        ctx.respond("CREATED", checkpoint_id, created)
        if checkpoint_type.takes_backup:
            ctx.result.backup_work.append(
                TakeBackup(
                    checkpoint_id,
                    created["checkpointPosition"],
                    checkpoint_type,
                    created["checkpointTimestamp"],
                )
            )

    def _confirm_backup(self, ctx: _Context) -> None:
        """Written by the leader once a backup is in the store. A confirmation older than the
        latest confirmed backup is late and refused: the latest backup never moves back."""
        value = ctx.command.value
        latest = self.state.backup_info.get("backup")
        if latest is not None and latest["checkpointId"] >= value["checkpointId"]:
            raise _Rejected(
                "INVALID_STATE",
                f"Expected to confirm backup {value['checkpointId']}, but the latest confirmed "
                f"backup is {latest['checkpointId']}",
            )
        known = self.state.checkpoints.get(value["checkpointId"], {})
        confirmed = {
            "checkpointId": value["checkpointId"],
            "checkpointPosition": value["checkpointPosition"],
            "checkpointType": value["checkpointType"],
            "checkpointTimestamp": known.get("checkpointTimestamp", ctx.command.timestamp_ms),
            "firstLogPosition": value["firstLogPosition"],
        }
        ctx.event(ValueType.CHECKPOINT, "CONFIRMED_BACKUP", value["checkpointId"], confirmed)
        ctx.respond("CONFIRMED_BACKUP", value["checkpointId"], confirmed)
        ctx.result.backup_work.append(SyncMetadata())

    def _delete_backup(self, ctx: _Context) -> None:
        """Idempotent: the backup leaves the state (ranges, checkpoints, latest backup), then,
        after commit, the store's metadata is synced and the backup deleted."""
        backup_id = ctx.command.value["checkpointId"]
        value = {"checkpointId": backup_id}
        ctx.event(ValueType.CHECKPOINT, "DELETED_BACKUP", backup_id, value)
        ctx.respond("DELETED_BACKUP", backup_id, value)
        ctx.result.backup_work += [SyncMetadata(), RemoveBackup(backup_id)]

    def _reset_backup_state(self, ctx: _Context) -> None:
        ctx.event(ValueType.CHECKPOINT, "STATE_RESET", ctx.command.key, {})
        ctx.respond("STATE_RESET", ctx.command.key, {})
        ctx.result.backup_work.append(SyncMetadata())

    def backup_runtime_state(
        self,
    ) -> tuple[CheckpointInfo | None, CheckpointInfo | None, list[tuple[int, int]]]:
        """The latest checkpoint, the latest confirmed backup and the backup ranges (start
        and end ids, oldest first)."""
        info = self.state.backup_info
        checkpoint, backup = info.get("checkpoint"), info.get("backup")
        return (
            checkpoint_info(checkpoint) if checkpoint is not None else None,
            checkpoint_info(backup) if backup is not None else None,
            sorted(self.state.backup_ranges.items()),
        )

    def known_checkpoints(self) -> list[CheckpointInfo]:
        """Every checkpoint the partition remembers (markers included), oldest first."""
        return [checkpoint_info(c) for _, c in sorted(self.state.checkpoints.items())]

    def restore_points(self) -> list[CheckpointInfo]:
        """The checkpoints as the store's metadata lists them for restore: a backup-type
        checkpoint whose backup is not confirmed (still uploading, or failed) is only a restore
        point inside a later backup's log, like a MARKER, and is listed as one."""
        return [
            checkpoint_info(
                raw if "firstLogPosition" in raw else {**raw, "checkpointType": "MARKER"}
            )
            for _, raw in sorted(self.state.checkpoints.items())
        ]

    # -- queries ------------------------------------------------------------------------------

    def instance_summaries(self) -> Iterator[dict[str, Any]]:
        """Every process instance as a search item (``zeebe_sim.ground.search``), with the
        field names of Camunda's ProcessInstanceResult; keys as integers, dates in epoch ms."""
        for key, instance in self.state.instances.items():
            process = self.state.processes.get(instance["processDefinitionKey"], {})
            yield {
                "processInstanceKey": key,
                "processDefinitionId": instance["bpmnProcessId"],
                "processDefinitionName": process.get("model", {}).get("name"),
                "processDefinitionVersion": instance["version"],
                "processDefinitionKey": instance["processDefinitionKey"],
                "state": instance["state"],
                "startDate": instance["startDate"],
                "endDate": instance["endDate"],
                "hasIncident": bool(instance.get("incident")),
                "tenantId": "<default>",
            }

    def incident_summaries(self) -> Iterator[dict[str, Any]]:
        """Every open incident as a search item, with the field names of Camunda's
        IncidentResult; keys as integers, the creation time in epoch ms."""
        for key, incident in self.state.incidents.items():
            job_key = incident.get("jobKey", -1)
            yield {
                "incidentKey": key,
                "processInstanceKey": incident["processInstanceKey"],
                "processDefinitionKey": incident["processDefinitionKey"],
                "processDefinitionId": incident["bpmnProcessId"],
                "elementId": incident["elementId"],
                "elementInstanceKey": incident["elementInstanceKey"],
                "jobKey": job_key if job_key > 0 else None,
                "errorType": incident["errorType"],
                "errorMessage": incident["errorMessage"],
                "creationTime": incident["creationTime"],
                "state": "ACTIVE",
                "tenantId": "<default>",
            }


_ELEMENT_TYPES = {
    "startEvent": "START_EVENT",
    "endEvent": "END_EVENT",
    "serviceTask": "SERVICE_TASK",
    "messageCatchEvent": "INTERMEDIATE_CATCH_EVENT",
}


def _without(value: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in value.items() if k not in names}
