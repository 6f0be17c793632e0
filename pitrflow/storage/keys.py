"""The repository's key hierarchy: data keys ("epochs") wrapped by master keys.

    _keys/master-<mid>.json                         a master key's KDF parameters or KMS blob
    _keys/epoch-<created>-<eid>.<mid>.json          data key <eid>, wrapped by master <mid>
    _keys/legacy-<eid>.json                         what existed when encryption was turned on

A data key is 256 random bits.  Every encrypted object names its epoch in its
header; new objects use the newest epoch, and `new_epoch` starts another (each full
backup does).  An epoch file holds the data key under AES-256-GCM with the master's
KEK, its own name fields as associated data, so a wrapped key cannot be moved to
another epoch or master.  These files are stored unencrypted (the wrapping is the
protection) under a prefix no instance can have, and are read lazily: a process
that never touches an encrypted object never derives a key.

Rekey (`rekey`) wraps every data key under a new master, then removes the old
wraps and master files; no data object is rewritten.  Each step is idempotent, so an
interrupted rekey finishes when run again, whichever master the config names by then.

The legacy record turns an unencrypted repository into an encrypted one for new
objects: when the first epoch is made, the names, sizes and modification times
of every object already there are sealed under that epoch.  From then on a
plaintext object is accepted only if it matches that record exactly; anything
else unencrypted was written (or replaced) after the cut-over and is refused.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pitrflow.errors import (
    EncryptionKeyError,
    ObjectLockedError,
    ObjectNotFoundError,
    RepositoryError,
)
from pitrflow.storage import crypto_format as fmt
from pitrflow.storage.base import ObjectInfo, Repository
from pitrflow.storage.masters import (
    KEYS_PREFIX,
    MASTER_PREFIX,
    MasterFile,
    MasterSource,
    b64,
    create_master,
    open_master,
    unb64,
)

log = logging.getLogger("pitrflow.storage.keys")

EPOCH_PREFIX = KEYS_PREFIX + "epoch-"
LEGACY_PREFIX = KEYS_PREFIX + "legacy-"
_STAMP = "%Y%m%dT%H%M%S.%fZ"
_EPOCH_RE = re.compile(r"^_keys/epoch-(\d{8}T\d{6}\.\d{6}Z)-([0-9a-f]{16})\.([0-9a-f]{16})\.json$")
_MASTER_RE = re.compile(r"^_keys/master-([0-9a-f]{16})\.json$")
_LEGACY_RE = re.compile(r"^_keys/legacy-([0-9a-f]{16})\.json$")
T = TypeVar("T")


def reserved(key: str) -> bool:
    return key.startswith(KEYS_PREFIX)


@dataclass(frozen=True)
class EpochWrap:
    epoch: str
    master: str
    created: str  # the stamp in the file name; epochs sort by it
    nonce: bytes = b""
    wrapped: bytes = b""

    @property
    def key(self) -> str:
        return f"{EPOCH_PREFIX}{self.created}-{self.epoch}.{self.master}.json"

    def _bound(self) -> bytes:
        return json.dumps({"format": "pitrflow-data-key", "version": 1, "epoch": self.epoch,
                           "master": self.master, "created": self.created},
                          sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def seal(cls, kek: bytes, epoch: str, master: str, created: str, data_key: bytes,
             ) -> EpochWrap:
        nonce = os.urandom(12)
        bare = cls(epoch, master, created)
        return cls(epoch, master, created, nonce,
                   AESGCM(kek).encrypt(nonce, data_key, bare._bound()))

    def open(self, kek: bytes) -> bytes | None:
        try:
            return AESGCM(kek).decrypt(self.nonce, self.wrapped, self._bound())
        except InvalidTag:
            return None

    def encode(self) -> bytes:
        doc = json.loads(self._bound())
        doc.update(nonce=b64(self.nonce), wrapped=b64(self.wrapped))
        return json.dumps(doc, indent=1, sort_keys=True).encode()

    def with_content(self, data: bytes) -> EpochWrap:
        try:
            doc = json.loads(data)
            nonce, wrapped = doc["nonce"], doc["wrapped"]
        except (ValueError, KeyError, TypeError):
            nonce = wrapped = ""
        return EpochWrap(self.epoch, self.master, self.created, unb64(nonce, self.key),
                         unb64(wrapped, self.key))


@dataclass
class RekeyResult:
    master: str
    rewrapped: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    locked: list[tuple[str, datetime | None]] = field(default_factory=list)


def _stamp(when: datetime | None = None) -> str:
    return (when or datetime.now(UTC)).astimezone(UTC).strftime(_STAMP)


def _locked(method: Callable[..., T]) -> Callable[..., T]:
    """One thread at a time: parallel readers must not each run Scrypt (128 MiB apiece)."""
    def guarded(self: KeyStore, *args: Any, **kwargs: Any) -> T:
        with self._lock:
            return method(self, *args, **kwargs)

    guarded.__doc__ = method.__doc__
    return guarded


class KeyStore:
    """The key files of one repository, as one process sees and uses them (thread-safe)."""

    def __init__(self, inner: Repository, source: MasterSource,
                 extend_lock: Callable[[str], None] | None = None) -> None:
        self._inner = inner
        self.source = source
        self._extend_lock = extend_lock
        self._listed = False
        self._masters: set[str] = set()
        self._wraps: dict[str, dict[str, EpochWrap]] = {}  # epoch -> master -> wrap
        self._legacy_keys: dict[str, str] = {}  # epoch -> key
        self._keks: dict[str, bytes | None] = {}
        self._data_keys: dict[str, bytes] = {}
        self._writing: str | None = None
        self._legacy: dict[str, tuple[int, int]] | None = None
        self._lock = threading.RLock()

    # --- what is there ---

    @_locked
    def refresh(self) -> None:
        self._masters.clear()
        self._wraps.clear()
        self._legacy_keys.clear()
        for info in self._inner.list(KEYS_PREFIX):
            if match := _EPOCH_RE.match(info.key):
                stamp, epoch, master = match.groups()
                self._wraps.setdefault(epoch, {})[master] = EpochWrap(epoch, master, stamp)
            elif match := _MASTER_RE.match(info.key):
                self._masters.add(match.group(1))
            elif match := _LEGACY_RE.match(info.key):
                self._legacy_keys[match.group(1)] = info.key
        self._listed = True

    def _ensure_listed(self) -> None:
        if not self._listed:
            self.refresh()

    @_locked
    def epochs(self) -> list[str]:
        """Epoch ids, oldest first."""
        self._ensure_listed()
        return sorted(self._wraps, key=lambda e: (min(w.created for w in
                                                      self._wraps[e].values()), e))

    @_locked
    def has_keys(self) -> bool:
        self._ensure_listed()
        return bool(self._wraps)

    # --- opening keys ---

    def _kek(self, master_id: str, source: MasterSource | None = None) -> bytes | None:
        source = source or self.source
        cache_key = f"{master_id}/{source.describe}"
        if cache_key not in self._keks:
            key = f"{MASTER_PREFIX}{master_id}.json"
            try:
                master = MasterFile.decode(self._inner.get_bytes(key), key)
            except ObjectNotFoundError:
                self._keks[cache_key] = None
                return None
            self._keks[cache_key] = open_master(source, master)
        return self._keks[cache_key]

    def _unwrap(self, wrap: EpochWrap, source: MasterSource | None = None) -> bytes | None:
        kek = self._kek(wrap.master, source)
        if kek is None:
            return None
        full = wrap.with_content(self._inner.get_bytes(wrap.key))
        return full.open(kek)

    @_locked
    def data_key(self, epoch: str, name: str | None = None) -> bytes:
        """The data key of `epoch` (named by object `name`), opened with the configured master."""
        if epoch in self._data_keys:
            return self._data_keys[epoch]
        self._ensure_listed()
        if epoch not in self._wraps:
            self.refresh()  # another process may have started it since we listed
        wraps = self._wraps.get(epoch)
        if not wraps:
            # Only this key's objects are lost, not the repository: a RepositoryError, so
            # the catalog rejects the backups it encrypted and the others stay usable.
            what = f" (named by object {name})" if name else ""
            raise RepositoryError(
                f"data key {epoch}{what} is not in the repository's {KEYS_PREFIX}",
                f"restore {KEYS_PREFIX} from a copy of the repository; without it the "
                "objects of this key cannot be read")
        for wrap in wraps.values():
            key = self._unwrap(wrap)
            if key is not None:
                self._data_keys[epoch] = key
                return key
        raise self._wrong_key(epoch, sorted(wraps))

    def _wrong_key(self, epoch: str, masters: list[str]) -> EncryptionKeyError:
        return EncryptionKeyError(
            f"{self.source.describe} does not open master key {', '.join(masters)}, which "
            f"wraps data key {epoch} of repository {self._inner.describe()}",
            "configure the passphrase or KMS key this repository was encrypted with "
            "([repository.encryption]); nothing was written")

    # --- writing ---

    @_locked
    def writing_epoch(self) -> tuple[str, bytes]:
        """The epoch new objects use: the newest one; the first one is made if there is none."""
        if self._writing is None:
            epochs = self.epochs()
            if not epochs:
                self.refresh()  # list again right before a cut-over: another may have made one
                epochs = self.epochs()
            epoch = epochs[-1] if epochs else self._first_epoch()
            self.data_key(epoch)
            self._writing = epoch
            self._extend(epoch)
        return self._writing, self._data_keys[self._writing]

    @_locked
    def new_epoch(self) -> str:
        """Start a new data key under the master the newest epoch uses; returns its id."""
        if self._writing is None and not self.epochs():
            self.refresh()
            if not self.epochs():
                return self.writing_epoch()[0]  # the cut-over's first data key is new already
        current, _ = self.writing_epoch()
        master = next(m for m, w in self._wraps[current].items()
                      if self._kek(m) is not None)
        epoch = self._make_epoch(master, self._kek(master))  # type: ignore[arg-type]
        self._writing = epoch
        return epoch

    def _make_epoch(self, master: str, kek: bytes, legacy: list[ObjectInfo] | None = None,
                    ) -> str:
        epoch = os.urandom(fmt.EPOCH_SIZE).hex()
        data_key = os.urandom(fmt.KEY_SIZE)
        if legacy:
            self._write_legacy(epoch, data_key, legacy)
        wrap = EpochWrap.seal(kek, epoch, master, _stamp(), data_key)
        self._inner.put_bytes(wrap.key, wrap.encode())
        # A rekey that removed this master meanwhile would never have seen this epoch.
        if not self._inner.exists(f"{MASTER_PREFIX}{master}.json"):
            self._inner.delete(wrap.key)
            raise EncryptionKeyError(
                f"master key {master} of repository {self._inner.describe()} was removed "
                "(pitr repo rekey) while a new data key was being made",
                "run again with the new master key configured; nothing was encrypted")
        self._wraps.setdefault(epoch, {})[master] = wrap
        self._data_keys[epoch] = data_key
        log.info("started data key %s (master key %s)", epoch, master)
        return epoch

    def _first_epoch(self) -> str:
        """The cut-over: a master (reused if one opens), the legacy record, the first epoch."""
        master, kek = None, None
        for candidate in sorted(self._masters):
            kek = self._kek(candidate)
            if kek is not None:
                master = candidate
                break
        if master is None:
            made, kek = create_master(self.source)
            self._inner.put_bytes(made.key, made.encode())
            master = made.id
            self._masters.add(master)
            self._keks[f"{master}/{self.source.describe}"] = kek
        assert kek is not None
        legacy = [info for info in self._inner.list("") if not reserved(info.key)]
        epoch = self._make_epoch(master, kek, legacy)
        log.info("encryption turned on for repository %s: %d existing objects recorded as "
                 "unencrypted", self._inner.describe(), len(legacy))
        return epoch

    def _extend(self, epoch: str) -> None:
        """Under Object Lock, the key files an epoch needs stay locked as long as its data."""
        if self._extend_lock is None:
            return
        for wrap in self._wraps.get(epoch, {}).values():
            self._extend_lock(wrap.key)
            self._extend_lock(f"{MASTER_PREFIX}{wrap.master}.json")

    # --- the legacy record ---

    def _write_legacy(self, epoch: str, data_key: bytes, objects: list[ObjectInfo]) -> None:
        rows = [[o.key, o.size, int(o.modified.timestamp()) if o.modified else 0]
                for o in objects]
        body = zstandard.ZstdCompressor(level=9).compress(json.dumps(
            {"format": "pitrflow-legacy", "version": 1, "epoch": epoch, "objects": rows}).encode())
        key = f"{LEGACY_PREFIX}{epoch}.json"
        self._inner.put_bytes(key, fmt.seal_bytes(data_key, epoch, key, body))
        self._legacy_keys[epoch] = key

    @_locked
    def legacy(self) -> dict[str, tuple[int, int]]:
        """key -> (size, modified seconds) of every object sealed as unencrypted at cut-over."""
        if self._legacy is None:
            self._ensure_listed()
            entries: dict[str, tuple[int, int]] = {}
            for epoch, key in sorted(self._legacy_keys.items()):
                if epoch not in self._wraps:
                    continue  # a cut-over that never finished: its record counts for nothing
                body = fmt.open_bytes(self.data_key(epoch, key), key, self._inner.get_bytes(key))
                doc = json.loads(zstandard.ZstdDecompressor().decompress(body))
                for name, size, modified in doc["objects"]:
                    entries[str(name)] = (int(size), int(modified))
            self._legacy = entries
        return self._legacy

    @_locked
    def has_legacy(self) -> bool:
        self._ensure_listed()
        return any(epoch in self._wraps for epoch in self._legacy_keys)

    # --- rekey ---

    @_locked
    def rekey(self, new: MasterSource) -> RekeyResult:
        """Wrap every data key under the master `new` opens (made if none does)."""
        self.refresh()
        new_master = next((m for m in sorted(self._masters) if self._kek(m, new) is not None),
                          None)
        if new_master is not None and self._kek(new_master) is not None and \
                new.describe != self.source.describe:
            raise EncryptionKeyError(
                f"{new.describe} opens master key {new_master}, which is already the one "
                f"{self.source.describe} opens", "give a different new passphrase or KMS key")
        keys = {epoch: self._open_any(epoch, new) for epoch in self.epochs()}
        if new_master is None:
            made, kek = create_master(new)
            self._inner.put_bytes(made.key, made.encode())
            new_master = made.id
            self._masters.add(new_master)
            self._keks[f"{new_master}/{new.describe}"] = kek
        new_kek = self._kek(new_master, new)
        assert new_kek is not None
        result = RekeyResult(new_master)
        while True:
            for epoch, data_key in keys.items():
                if new_master not in self._wraps.get(epoch, {}):
                    created = min(w.created for w in self._wraps[epoch].values())
                    wrap = EpochWrap.seal(new_kek, epoch, new_master, created, data_key)
                    self._inner.put_bytes(wrap.key, wrap.encode())
                    self._wraps[epoch][new_master] = wrap
                    result.rewrapped.append(epoch)
            old = [w.key for ws in self._wraps.values() for m, w in ws.items() if m != new_master]
            old += [f"{MASTER_PREFIX}{m}.json" for m in sorted(self._masters) if m != new_master]
            done = set(result.removed) | {key for key, _ in result.locked}
            for key in old:
                if key not in done:
                    self._remove(key, result)
            # An epoch another process made under an old master while this ran.
            self.refresh()
            late = {e: self._open_any(e, new) for e in self.epochs() if e not in keys}
            if not late:
                return result
            keys.update(late)

    def _open_any(self, epoch: str, new: MasterSource) -> bytes:
        for wrap in self._wraps[epoch].values():
            for source in (self.source, new):
                key = self._unwrap(wrap, source)
                if key is not None:
                    return key
        raise self._wrong_key(epoch, sorted(self._wraps[epoch]))

    def _remove(self, key: str, result: RekeyResult) -> None:
        try:
            self._inner.delete(key)
        except ObjectLockedError as exc:
            result.locked.append((key, exc.until))
            return
        result.removed.append(key)
