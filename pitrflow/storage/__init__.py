"""Backup repository: one interface, one driver per kind of store."""

from pitrflow.storage.base import ObjectInfo, Repository, StorageFeatures
from pitrflow.storage.open import open_repository

__all__ = ["ObjectInfo", "Repository", "StorageFeatures", "open_repository"]
