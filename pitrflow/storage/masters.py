"""Master keys: what wraps the repository's data keys (storage.keys).

A master key is a 256-bit key-encryption key (KEK) held by no file in clear:
- from a passphrase, through Scrypt (memory-hard; n, r, p and the salt are stored in
  the master file, so they can be raised later without breaking old repositories);
  the passphrase comes from an environment variable or a Prefect Secret block
  (resolved by the block resolver the tasks layer registers, pitrflow.secrets);
- or from AWS KMS: a random KEK encrypted by the KMS key (envelope encryption),
  decrypted by KMS once per process, with the master id as encryption context.

A master file (`_keys/master-<id>.json`) carries the KDF parameters or the KMS
blob and a check value: an AES-GCM tag over its own fields under the KEK, so a
wrong passphrase is told apart from damage and the parameters cannot be edited.
Neither the passphrase nor any key ever reaches a message, a log line or a file.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from pitrflow.config import EncryptionConfig
from pitrflow.errors import ConfigError, EncryptionKeyError, RepositoryError

KEYS_PREFIX = "_keys/"
MASTER_PREFIX = KEYS_PREFIX + "master-"
KEK_SIZE = 32
# Scrypt at n = 2^17, r = 8 needs 128 MiB and ~0.4 s here: once per process.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**17, 8, 1
_CHECK_NONCE = b"\0" * 12  # one fixed message per KEK: the KEK itself is random per master


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: object, what: str) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except ValueError:
        raise RepositoryError(f"{what} is not valid base64", "the key file is damaged") from None


@dataclass(frozen=True)
class MasterSource:
    """Where this process gets its master key: a passphrase or a KMS key (never the key)."""

    kind: str  # "passphrase" | "kms"
    describe: str
    passphrase_env: str | None = None
    passphrase_block: str | None = None
    kms_key_id: str | None = None
    kms_region: str | None = None
    kms_endpoint_url: str | None = None
    credentials_block: str | None = field(default=None, repr=False)

    def passphrase(self) -> str:
        from pitrflow import secrets

        if self.passphrase_env:
            value = os.environ.get(self.passphrase_env)
            if not value:
                raise EncryptionKeyError(
                    f"environment variable {self.passphrase_env} (the repository's "
                    "passphrase_env) is not set", f"export {self.passphrase_env}=... in the "
                    "worker's environment; nothing was written")
            return value
        assert self.passphrase_block is not None
        return secrets.block_secret(self.passphrase_block, "repository.encryption.passphrase_block")


def source_from_config(config: EncryptionConfig, credentials_block: str | None = None,
                       ) -> MasterSource:
    if config.passphrase_env:
        return MasterSource("passphrase", f"the passphrase in ${config.passphrase_env}",
                            passphrase_env=config.passphrase_env)
    if config.passphrase_block:
        return MasterSource("passphrase",
                            f"the passphrase in Prefect Secret block {config.passphrase_block}",
                            passphrase_block=config.passphrase_block)
    if config.kms_key_id:
        return MasterSource("kms", f"KMS key {config.kms_key_id}", kms_key_id=config.kms_key_id,
                            kms_region=config.kms_region,
                            kms_endpoint_url=config.kms_endpoint_url,
                            credentials_block=credentials_block)
    raise ConfigError("repository.encryption names no master key",
                      "set one of passphrase_env, passphrase_block or kms_key_id")


@dataclass(frozen=True)
class MasterFile:
    id: str
    kind: str
    created: str
    params: dict[str, Any]
    check: bytes = b""

    @property
    def key(self) -> str:
        return f"{MASTER_PREFIX}{self.id}.json"

    def _bound(self) -> bytes:
        return json.dumps({"format": "pitrflow-master-key", "version": 1, "id": self.id,
                           "kind": self.kind, "created": self.created, "params": self.params},
                          sort_keys=True, separators=(",", ":")).encode()

    def encode(self) -> bytes:
        doc = json.loads(self._bound())
        doc["check"] = b64(self.check)
        return json.dumps(doc, indent=1, sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes, key: str) -> MasterFile:
        try:
            doc = json.loads(data)
            return cls(str(doc["id"]), str(doc["kind"]), str(doc["created"]),
                       dict(doc["params"]), unb64(doc["check"], key))
        except (ValueError, KeyError, TypeError):
            raise RepositoryError(f"master key file {key} is damaged",
                                  "restore it from a copy of the repository's _keys/") from None

    def seal_check(self, kek: bytes) -> MasterFile:
        check = AESGCM(kek).encrypt(_CHECK_NONCE, b"", self._bound())
        return MasterFile(self.id, self.kind, self.created, self.params, check)

    def opens_with(self, kek: bytes) -> bool:
        try:
            AESGCM(kek).decrypt(_CHECK_NONCE, self.check, self._bound())
        except InvalidTag:
            return False
        return True


# Derived KEKs, by (the passphrase's digest, salt, n, r, p): one process opens the
# repository several times (catalog, backup, baselines...), and each Scrypt costs ~0.4 s
# and 128 MiB.  Kept in memory only, as the KeyStore keeps the KEK itself; a different
# passphrase has a different digest and derives afresh.
_DERIVED: dict[tuple[str, str, int, int, int], bytes] = {}
_DERIVED_LOCK = threading.Lock()


def _scrypt(passphrase: str, params: dict[str, Any]) -> bytes:
    n, r, p = int(params["n"]), int(params["r"]), int(params["p"])
    cache_key = (hashlib.sha256(passphrase.encode()).hexdigest(), str(params["salt"]), n, r, p)
    with _DERIVED_LOCK:
        found = _DERIVED.get(cache_key)
        if found is None:
            found = _DERIVED[cache_key] = Scrypt(
                salt=unb64(params["salt"], "scrypt salt"), length=KEK_SIZE, n=n, r=r,
                p=p).derive(passphrase.encode())
    return found


def create_master(source: MasterSource) -> tuple[MasterFile, bytes]:
    """A new master file and its KEK (the KEK stays in memory)."""
    master_id = os.urandom(8).hex()
    created = datetime.now(UTC).isoformat()
    if source.kind == "passphrase":
        params: dict[str, Any] = {"kdf": "scrypt", "salt": b64(os.urandom(16)),
                                  "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P}
        kek = _scrypt(source.passphrase(), params)
    else:
        kek, blob = _kms(source).new_kek(master_id)
        params = {"kms_key_id": source.kms_key_id, "wrapped_kek": b64(blob)}
    return MasterFile(master_id, source.kind, created, params).seal_check(kek), kek


def open_master(source: MasterSource, master: MasterFile) -> bytes | None:
    """The KEK of `master` if this source opens it; None if it is not this source's key."""
    if master.kind != source.kind:
        return None
    if source.kind == "passphrase":
        kek = _scrypt(source.passphrase(), master.params)
    else:
        kek = _kms(source).open_kek(master.id, unb64(master.params.get("wrapped_kek"),
                                                     master.key))
        if kek is None:
            return None
    return kek if master.opens_with(kek) else None


def _kms(source: MasterSource) -> _Kms:
    return _Kms(source)


class _Kms:
    """The two KMS calls pitrflow makes, with KMS's failures as one-line errors."""

    def __init__(self, source: MasterSource) -> None:
        import boto3

        from pitrflow.storage.s3_credentials import resolve_keys

        assert source.kms_key_id is not None
        self.key_id = source.kms_key_id
        self.where = source.kms_endpoint_url or (f"AWS KMS ({source.kms_region})"
                                                 if source.kms_region else "AWS KMS")
        keys = resolve_keys(source.credentials_block)
        session = boto3.session.Session(**(keys.session_kwargs() if keys else {}))
        try:
            self.client = session.client("kms", region_name=source.kms_region,
                                         endpoint_url=source.kms_endpoint_url)
        except ValueError as exc:
            raise ConfigError(f"repository.encryption.kms_endpoint_url is not usable: {exc}",
                              "write it as http(s)://host[:port]") from None

    def _context(self, master_id: str) -> dict[str, str]:
        return {"pitrflow-master-key": master_id}

    def new_kek(self, master_id: str) -> tuple[bytes, bytes]:
        response = self._call("GenerateDataKey", lambda: self.client.generate_data_key(
            KeyId=self.key_id, KeySpec="AES_256", EncryptionContext=self._context(master_id)))
        return bytes(response["Plaintext"]), bytes(response["CiphertextBlob"])

    def open_kek(self, master_id: str, blob: bytes) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            response = self.client.decrypt(CiphertextBlob=blob, KeyId=self.key_id,
                                           EncryptionContext=self._context(master_id))
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("IncorrectKeyException", "InvalidCiphertextException"):
                return None  # this master was wrapped by another KMS key
            raise self._translate(exc, "Decrypt") from None
        except Exception as exc:  # noqa: BLE001 - connection trouble: one line
            raise self._translate(exc, "Decrypt") from None
        return bytes(response["Plaintext"])

    def _call(self, action: str, fn: Any) -> Any:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - every KMS failure becomes one line
            raise self._translate(exc, action) from None

    def _translate(self, exc: BaseException, action: str) -> EncryptionKeyError:
        response = getattr(exc, "response", None)
        code = str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""
        if code == "NotFoundException":
            return EncryptionKeyError(
                f"KMS key {self.key_id} does not exist at {self.where} (or these credentials "
                "cannot see it)", "fix repository.encryption.kms_key_id (a key id, ARN or "
                "alias/NAME) or kms_region; nothing was written")
        if code in ("DisabledException", "KMSInvalidStateException"):
            return EncryptionKeyError(f"KMS key {self.key_id} at {self.where} is disabled or "
                                      "pending deletion", "enable the key in KMS")
        if code in ("AccessDeniedException", "AccessDenied"):
            return EncryptionKeyError(
                f"access denied for KMS {action} with key {self.key_id} at {self.where}",
                "allow the worker's credentials kms:Encrypt, kms:Decrypt and "
                "kms:GenerateDataKey on the key")
        return EncryptionKeyError(
            f"KMS {action} with key {self.key_id} at {self.where} failed: "
            f"{code or type(exc).__name__}", "check the KMS endpoint, region and credentials")
