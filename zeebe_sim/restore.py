"""``zeebe-sim restore``: rebuild brokers' data directories from backups (REFERENCE.md §5): one
backup, a chain of backups (``--backup-id 1,2``) or a point in time (``--to``, resolved against
the store's metadata by ``storage/restore_points.py``). ``storage/restore.py`` lays out each
partition (shared with the in-process restore); this module makes it all or nothing.

Theory of operation
-------------------
Everything is checked before anything is written: the target data directories must be empty,
and the backup must be COMPLETED on **every** partition (Zeebe checks only the partitions a node
hosts; a partial restore is how users lost data, REFERENCE §8) with the configured partition
count. Then the restore is all or nothing across the cluster, even when killed at any instant:

1. *Stage*: every broker is laid out under ``<data-dir>/.restore/broker-<n>``: each partition it
   hosts a replica of (round-robin placement with the replication factor, as Zeebe's restore
   places them: every replica from the same backup, REFERENCE replication.md B.6) has its
   snapshot installed (checksums verified), its segments placed and its log truncated right
   after the ``CHECKPOINT CREATE`` entry at the checkpoint position; then every staged file and
   directory is fsynced.
2. *Commit*: the journal ``<data-dir>/.restore-journal.json`` (the request, brokers) is written
   durably (write temp + fsync + rename + fsync(dir)). Before it exists, ``.restore`` is
   scratch: a failure, or the next run after a crash, deletes it, and no data directory was
   touched.
3. *Place*: each staged broker directory is renamed onto its (empty or absent) data directory,
   both parents fsynced. A rename either happened or did not, so this step is idempotent: after
   a crash the next run reads the journal and places what is still staged.
4. *Finish*: ``.restore`` (empty by now) is removed, and last the journal: its removal is the
   one atomic act that ends the restore.

While a journal exists the data directory is *unfinished*: :func:`unfinished_restore` says so,
``zeebe-sim verify`` and a broker refuse it, and the next ``zeebe-sim restore`` with the same
ids or window finishes it (another request is refused, naming the flags that finish it).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs

from storage.backup.api import BackupStore
from storage.durable import ensure_directory, fsync_directory
from storage.restore import (
    PartitionChain,
    Progress,
    RestoreError,
    RestoreRequest,
    chains_of_ids,
    chains_of_window,
    find_backup,
    fsync_tree,
    restore_partition,
)
from storage.restore_points import iso_ms
from zeebe_sim.ground import layout
from zeebe_sim.ground.errors import ZeebeSimError
from zeebe_sim.ground.ids import NodeId, PartitionId
from zeebe_sim.ground.routing import replicated_partitions_of_broker

# Re-exported: the CLI and the tests use them from here.
__all__ = ["Progress", "RestoreError", "RestoreRequest", "find_backup"]


async def resolve_chains(
    store: BackupStore, request: RestoreRequest, partition_count: int, progress: Progress
) -> dict[PartitionId, PartitionChain]:
    """Each partition's chain of backups for ``request``.

    Raises:
        RestoreError: a backup is not COMPLETED on every partition, the partition count
            differs, or the window holds no restore point (empty, or a gap).
    """
    if not request.backup_ids:
        point, chains = await chains_of_window(store, request, partition_count)
        progress(
            f"Restore point: checkpoint {point.checkpoint_id} taken at "
            f"{iso_ms(point.checkpoint_timestamp_ms)}, the latest common to all "
            f"{partition_count} partitions in {request.describe()}; backups per partition: "
            + "; ".join(f"{p}: {chains[p].backup_ids}" for p in sorted(chains))
        )
        return chains
    chains = await chains_of_ids(store, request.backup_ids, partition_count)
    verb = "are" if len(request.backup_ids) > 1 else "is"
    progress(
        f"{request.describe().capitalize()} {verb} COMPLETED on all {partition_count} partitions"
    )
    return chains


async def restore(
    store: BackupStore,
    *,
    data_dir: Path,
    request: RestoreRequest,
    cluster_size: int,
    partition_count: int,
    node_ids: list[NodeId],
    progress: Progress,
    crash_point: CrashPoint = lambda step: None,
    replication_factor: int = 1,
) -> None:
    """Restore ``node_ids``' data directories as ``request`` says, all or nothing (see
    the module docstring); first finishes or cleans up what an interrupted run left. Each
    broker gets every replica it hosts with ``replication_factor``.

    ``crash_point`` is called after every durable step with its name (fault injection: see
    :func:`crash_at`).

    Raises:
        RestoreError: refused (non-empty directory, incomplete backup, partition count, an
            unfinished restore of another backup, another restore into the directory running
            now) or failed before the commit (corrupt file, missing checkpoint entry): no data
            directory was changed. Or it failed while placing the committed restore: the
            message says to run it again to finish.
    """
    with _exclusive(data_dir):
        staging = data_dir / STAGING_DIR
        journal = read_journal(data_dir)
        if journal is not None:
            if journal.request != request:
                raise RestoreError(
                    f"{unfinished_restore(data_dir)}; refusing to restore {request.describe()} "
                    "(nothing was changed)"
                )
            progress(
                f"Finishing the interrupted restore of {request.describe()} into {data_dir} "
                f"(brokers {list(journal.node_ids)})"
            )
            _place(data_dir, journal, progress, crash_point)
            node_ids = [n for n in node_ids if n not in journal.node_ids]
            if not node_ids:
                return
        elif staging.exists():
            shutil.rmtree(staging)
            fsync_directory(data_dir)
            progress(
                f"Removed {staging}: an earlier restore was interrupted before it changed any data "
                "directory"
            )
        for node in node_ids:
            target = layout.broker_dir(data_dir, node)
            if target.exists() and any(target.iterdir()):
                raise RestoreError(
                    f"The data directory {target} is not empty; restore only writes into empty "
                    "ones (nothing was changed)"
                )
        chains = await resolve_chains(store, request, partition_count, progress)
        try:
            ensure_directory(staging)
            for node in node_ids:
                layout.broker_dir(staging, node).mkdir()  # also for a broker without partitions
                for partition_id in replicated_partitions_of_broker(
                    node, cluster_size, partition_count, replication_factor
                ):
                    await restore_partition(
                        store,
                        chains[partition_id],
                        layout.partition_dir(layout.broker_dir(staging, node), partition_id),
                        progress,
                    )
                    crash_point(f"staged partition {partition_id}")
            fsync_tree(staging)
            crash_point("staged everything durably")
        except BaseException as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(exc, RestoreError):
                raise
            if isinstance(exc, ZeebeSimError):
                raise RestoreError(f"Restore failed, nothing was restored: {exc.message}") from exc
            if isinstance(exc, OSError):
                raise RestoreError(f"Restore failed, nothing was restored: {exc}") from exc
            raise
        journal = Journal(request, tuple(node_ids))
        _write_journal(data_dir, journal)
        crash_point("committed")
        _place(data_dir, journal, progress, crash_point)


@contextlib.contextmanager
def _exclusive(data_dir: Path) -> Iterator[None]:
    """Hold ``data_dir`` for one restore (a lock on the directory itself, so that no file is
    left behind): a second restore into it meanwhile would take the first one's staging
    directory for an interrupted run's and remove it. The lock ends with the process."""
    ensure_directory(data_dir)
    fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RestoreError(
                f"Another restore into {data_dir} is running; wait for it to end "
                "(nothing was changed)"
            ) from None
        yield
    finally:
        os.close(fd)


# -- the journal and the placing step -----------------------------------------------------------

# Re-exported for the tests of the restore protocol.
STAGING_DIR = layout.RESTORE_STAGING_DIR
JOURNAL_FILE = layout.RESTORE_JOURNAL_FILE
CrashPoint = Callable[[str], None]
CRASH_EXIT_CODE = 86


def crash_at(step: int) -> CrashPoint:
    """A crash point that ends the process at once (``os._exit``: no cleanup, no flush, as a
    kill -9 would) at its ``step``-th call, counting from 1."""
    calls = 0

    def crash_point(name: str) -> None:
        nonlocal calls
        calls += 1
        if calls == step:
            os._exit(CRASH_EXIT_CODE)

    return crash_point


@attrs.frozen
class Journal:
    """A committed restore: its data is staged, its brokers' directories may be placed."""

    request: RestoreRequest
    node_ids: tuple[int, ...]


def read_journal(data_dir: Path) -> Journal | None:
    """The journal of a committed, unfinished restore into ``data_dir``, if there is one.

    Raises:
        RestoreError: the journal is unreadable (it is only ever replaced whole, so this is
            damage from outside).
    """
    path = data_dir / JOURNAL_FILE
    try:
        content = json.loads(path.read_bytes())
        request = RestoreRequest(
            tuple(int(i) for i in content["backupIds"]),
            None if content["from"] is None else int(content["from"]),
            None if content["to"] is None else int(content["to"]),
        )
        return Journal(request, tuple(int(n) for n in content["nodeIds"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RestoreError(f"The restore journal {path} is unreadable: {exc}") from exc


def unfinished_restore(data_dir: Path) -> str | None:
    """Why ``data_dir`` must not be used yet because of an interrupted restore, or None."""
    journal = read_journal(data_dir)
    if journal is not None:
        return (
            f"A restore of {journal.request.describe()} into {data_dir} (brokers "
            f"{list(journal.node_ids)}) is unfinished: run `zeebe-sim restore "
            f"{journal.request.flags()}` with the same flags to finish it"
        )
    if (data_dir / STAGING_DIR).exists():
        return (
            f"An interrupted restore left its staging directory {data_dir / STAGING_DIR} (it "
            "changed no data directory): run `zeebe-sim restore` again, which removes it"
        )
    return None


def _write_journal(data_dir: Path, journal: Journal) -> None:
    """The commit point: write temp + fsync + rename + fsync(dir). The temporary file is in
    the staging directory, so that a crash before the rename leaves nothing outside it."""
    temp = data_dir / STAGING_DIR / "journal.tmp"
    request = journal.request
    content = {
        "backupIds": list(request.backup_ids),
        "from": request.from_ms,
        "to": request.to_ms,
        "nodeIds": list(journal.node_ids),
    }
    with open(temp, "wb") as file:
        file.write(json.dumps(content).encode())
        file.flush()
        os.fsync(file.fileno())
    os.replace(temp, data_dir / JOURNAL_FILE)
    fsync_directory(data_dir / STAGING_DIR)
    fsync_directory(data_dir)


def _place(data_dir: Path, journal: Journal, progress: Progress, crash_point: CrashPoint) -> None:
    """Rename every staged broker directory into place, then remove the journal; idempotent.

    Raises:
        RestoreError: a broker's directory can be neither placed nor found placed.
    """
    staging = data_dir / STAGING_DIR
    for node in journal.node_ids:
        stage, target = (
            layout.broker_dir(staging, NodeId(node)),
            layout.broker_dir(data_dir, NodeId(node)),
        )
        if stage.exists():
            try:
                # rename(2) replaces an empty directory atomically; a non-empty one refuses.
                os.replace(stage, target)
            except OSError as exc:
                raise RestoreError(
                    f"Cannot place broker {node}'s restored data into {target}: {exc}. "
                    f"{unfinished_restore(data_dir)}"
                ) from exc
            fsync_directory(staging)
            fsync_directory(data_dir)
            crash_point(f"placed broker {node}")
        elif not target.is_dir():
            raise RestoreError(
                f"The restore journal of {journal.request.describe()} lists broker {node}, but "
                f"neither its staged data nor {target} exists; remove {data_dir} and restore "
                "again"
            )
        progress(f"Broker {node}: restored into {target}")
    if staging.exists():
        shutil.rmtree(staging)  # empty: every broker directory was moved out of it
        fsync_directory(data_dir)
        crash_point("removed the staging directory")
    (data_dir / JOURNAL_FILE).unlink()
    fsync_directory(data_dir)
