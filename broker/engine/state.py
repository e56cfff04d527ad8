"""Partition state: what event appliers build and snapshots persist.

Theory of operation
-------------------
State is a handful of column families, each a dict from a key to an **immutable** value (a
value is replaced, never changed in place). That makes a consistent snapshot cheap: a shallow
copy of each dict, taken between two processing steps, is a frozen view the snapshot writer can
serialise in the background while processing goes on (REFERENCE.md §2: no long pauses).

Only event appliers (``broker/engine/appliers.py``) change state, so state is a pure function of
the events in the log. Secondary indexes (jobs by type, subscriptions by name and key) are
derived: rebuilt from the column families after a snapshot is loaded, never persisted.

Undo: a command whose processing fails half-way must leave no trace (Zeebe rolls back the
command's transaction). Every column family is a :class:`Family`, a dict that journals the value
each write replaces, in one journal per state; :meth:`State.begin_command` marks the point to
return to, :meth:`State.rollback_command` puts the replaced values back in reverse order and
rebuilds the derived indexes from the restored families. The normal path pays one list append
per write (no copy), the rare failure pays a reindex. After a rollback the families hold exactly
the same entries as before the command; only the iteration order of an entry that was removed
and put back may differ, and no decision that depends on it goes unrecorded in the log.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from zeebe_sim.ground.ids import NO_CHECKPOINT

# Column families persisted in snapshots. Values are plain msgpack-able maps.
COLUMN_FAMILIES = (
    "processes",  # processDefinitionKey -> process definition (with its model)
    "latest_process",  # bpmnProcessId -> processDefinitionKey of the newest version
    "deployments",  # deploymentKey -> the deployment (resources, processes) for distribution
    "distributions",  # deploymentKey -> partitions that have not acknowledged it yet
    "instances",  # processInstanceKey -> instance
    "jobs",  # jobKey -> job
    "messages",  # messageKey -> buffered message
    "message_ids",  # "name\0correlationKey\0messageId" -> messageKey, for duplicate rejection
    "message_subscriptions",  # "elementInstanceKey\0messageName" -> subscription (message side)
    "process_subscriptions",  # elementInstanceKey -> subscription (process side)
    "correlated",  # messageKey -> bpmnProcessIds it correlated to (once per process)
    "incidents",  # incidentKey -> open incident
    # Backup runtime state (reference backups-8.9-8.10.md A.4):
    "checkpoints",  # checkpointId -> {checkpointPosition, checkpointTimestamp, checkpointType,
    #                 firstLogPosition (confirmed backups only)}
    "backup_ranges",  # start checkpointId -> end checkpointId of a contiguous run of backups
    "backup_info",  # "checkpoint" / "backup" -> the latest checkpoint / confirmed backup
)

K = TypeVar("K")
V = TypeVar("V")
_MISSING: Any = object()
# (family, key, the value the write replaced or _MISSING)
Journal = list[tuple[dict[Any, Any], Any, Any]]


class Family(dict[K, V]):
    """A column family: a dict whose every write journals the value it replaces."""

    __slots__ = ("_journal",)

    def __init__(self, journal: Journal, items: Iterable[tuple[K, V]] = ()) -> None:
        super().__init__(items)
        self._journal = journal

    def __setitem__(self, key: K, value: V) -> None:
        self._journal.append((self, key, dict.get(self, key, _MISSING)))
        dict.__setitem__(self, key, value)

    def __delitem__(self, key: K) -> None:
        self._journal.append((self, key, dict.__getitem__(self, key)))
        dict.__delitem__(self, key)

    def pop(self, key: K, *default: Any) -> Any:
        if key in self:
            self._journal.append((self, key, dict.__getitem__(self, key)))
        return dict.pop(self, key, *default)

    def setdefault(self, key: K, default: V = None) -> V:  # type: ignore[assignment]
        if key not in self:
            self[key] = default
        return dict.__getitem__(self, key)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def popitem(self) -> tuple[K, V]:
        key, value = dict.popitem(self)
        self._journal.append((self, key, value))
        return key, value

    def clear(self) -> None:
        for key in list(self):
            del self[key]


class State:
    def __init__(self, partition_id: int) -> None:
        self.partition_id = partition_id
        self._journal: Journal = []
        self._undo_point: tuple[int, int, int] = (1, NO_CHECKPOINT, -1)
        self.next_key_local = 1
        self.checkpoint_id: int = NO_CHECKPOINT
        self.checkpoint_position: int = -1
        self.processes: dict[int, dict[str, Any]] = {}
        self.latest_process: dict[str, int] = {}
        self.deployments: dict[int, dict[str, Any]] = {}
        self.distributions: dict[int, tuple[int, ...]] = {}
        self.instances: dict[int, dict[str, Any]] = {}
        self.jobs: dict[int, dict[str, Any]] = {}
        self.messages: dict[int, dict[str, Any]] = {}
        self.message_ids: dict[str, int] = {}
        self.message_subscriptions: dict[str, dict[str, Any]] = {}
        self.process_subscriptions: dict[int, dict[str, Any]] = {}
        self.correlated: dict[int, tuple[str, ...]] = {}
        self.incidents: dict[int, dict[str, Any]] = {}
        self.checkpoints: dict[int, dict[str, Any]] = {}
        self.backup_ranges: dict[int, int] = {}
        self.backup_info: dict[str, dict[str, Any]] = {}
        # Derived indexes, rebuilt by `reindex`.
        self.activatable_jobs: dict[str, dict[int, None]] = {}  # type -> ordered set of keys
        # (deadline, key) heaps; entries may be stale (checked against the column family).
        self.job_deadlines: list[tuple[int, int]] = []
        self.job_backoffs: list[tuple[int, int]] = []  # (recurAt, key) of jobs in back-off
        self.message_deadlines: list[tuple[int, int]] = []
        # (message name, correlation key) -> buffered message keys, oldest first / message
        # subscriptions: correlation looks up, it never scans.
        self.messages_by_name_key: dict[tuple[str, str], dict[int, None]] = {}
        self.subscriptions_by_name_key: dict[tuple[str, str], dict[str, None]] = {}
        for name in COLUMN_FAMILIES:
            setattr(self, name, Family(self._journal, getattr(self, name).items()))

    # -- undo ---------------------------------------------------------------------------------

    def begin_command(self) -> None:
        """Mark the state to return to if the command about to be processed fails."""
        self._journal.clear()
        self._undo_point = (self.next_key_local, self.checkpoint_id, self.checkpoint_position)

    def commit_command(self) -> None:
        """The changes since :meth:`begin_command` stay (and the journal lets go of them)."""
        self._journal.clear()

    def rollback_command(self) -> None:
        """Undo every change since :meth:`begin_command`."""
        for family, key, value in reversed(self._journal):
            if value is _MISSING:
                dict.pop(family, key, None)
            else:
                dict.__setitem__(family, key, value)
        self._journal.clear()
        self.next_key_local, self.checkpoint_id, self.checkpoint_position = self._undo_point
        self.reindex()

    # -- snapshots ------------------------------------------------------------------------

    def copy_for_snapshot(self) -> dict[str, Any]:
        """A frozen view of the state, cheap enough to take between two processing steps."""
        view: dict[str, Any] = {name: dict(getattr(self, name)) for name in COLUMN_FAMILIES}
        view["meta"] = {
            "next_key_local": self.next_key_local,
            "checkpoint_id": self.checkpoint_id,
            "checkpoint_position": self.checkpoint_position,
        }
        return view

    @classmethod
    def from_snapshot(cls, partition_id: int, view: Mapping[str, Any]) -> State:
        state = cls(partition_id)
        meta = view["meta"]
        state.next_key_local = meta["next_key_local"]
        state.checkpoint_id = meta["checkpoint_id"]
        state.checkpoint_position = meta["checkpoint_position"]
        for name in COLUMN_FAMILIES:
            loaded = view.get(name, {})
            if name in ("distributions", "correlated"):
                loaded = {k: tuple(v) for k, v in loaded.items()}
            setattr(state, name, Family(state._journal, loaded.items()))
        state.reindex()
        return state

    def index_message(self, key: int, message: dict[str, Any]) -> None:
        name_key = (message["name"], message["correlationKey"])
        self.messages_by_name_key.setdefault(name_key, {})[key] = None

    def index_subscription(self, key: str, subscription: dict[str, Any]) -> None:
        name_key = (subscription["messageName"], subscription["correlationKey"])
        self.subscriptions_by_name_key.setdefault(name_key, {})[key] = None

    def reindex(self) -> None:
        self.activatable_jobs = {}
        self.job_deadlines = []
        self.job_backoffs = []
        for key, job in self.jobs.items():
            if job["state"] == "ACTIVATABLE":
                self.activatable_jobs.setdefault(job["type"], {})[key] = None
            elif job["state"] == "ACTIVATED":
                self.job_deadlines.append((job["deadline"], key))
            elif job["state"] == "FAILED" and job.get("recurAt", -1) >= 0:
                self.job_backoffs.append((job["recurAt"], key))
        self.message_deadlines = [(m["deadline"], key) for key, m in self.messages.items()]
        self.messages_by_name_key = {}
        for message_key, message in sorted(self.messages.items()):
            self.index_message(message_key, message)
        self.subscriptions_by_name_key = {}
        for subscription_key, subscription in self.message_subscriptions.items():
            self.index_subscription(subscription_key, subscription)
        heapq.heapify(self.job_deadlines)
        heapq.heapify(self.job_backoffs)
        heapq.heapify(self.message_deadlines)
