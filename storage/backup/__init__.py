"""Backup stores: where partition backups go (in-memory, filesystem, S3) and their manifests.

The interface and its semantics are in :mod:`storage.backup.api`; every store implements it
through :class:`storage.backup.base.ManifestBackupStore`. The S3 store (on obstore) is
imported from :mod:`storage.backup.s3` on demand.
"""

from storage.backup.api import (
    Backup,
    BackupDescriptor,
    BackupIdentifier,
    BackupIdentifierWildcard,
    BackupStatus,
    BackupStore,
    FileRef,
    RestoredBackup,
)
from storage.backup.config import FilesystemStoreConfig, S3StoreConfig
from storage.backup.filesystem import FilesystemBackupStore
from storage.backup.memory import InMemoryBackupStore, MemoryObjects
from storage.backup.open import open_store

__all__ = [
    "Backup",
    "BackupDescriptor",
    "BackupIdentifier",
    "BackupIdentifierWildcard",
    "BackupStatus",
    "BackupStore",
    "FileRef",
    "FilesystemBackupStore",
    "FilesystemStoreConfig",
    "InMemoryBackupStore",
    "MemoryObjects",
    "RestoredBackup",
    "S3StoreConfig",
    "open_store",
]
