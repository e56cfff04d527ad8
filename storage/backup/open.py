"""Building the store a configuration describes."""

from __future__ import annotations

from storage.backup.api import BackupStore
from storage.backup.config import FilesystemStoreConfig, S3StoreConfig
from storage.backup.filesystem import FilesystemBackupStore


def open_store(config: FilesystemStoreConfig | S3StoreConfig) -> BackupStore:
    """The store ``config`` describes. Nothing is contacted yet: call ``check()`` for that.

    Raises ConfigError if the store cannot be built from the configuration.
    """
    if isinstance(config, FilesystemStoreConfig):
        return FilesystemBackupStore(
            config.base_path,
            compression=config.compression,
            upload_delay_s=config.upload_delay_s,
        )
    # Imported here so that obstore is only loaded by clusters that use S3.
    from storage.backup.s3 import S3BackupStore

    return S3BackupStore(config)
