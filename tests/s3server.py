"""A real S3 endpoint for the tests: moto's server over HTTP, behind a fault-injecting proxy.

`moto_server` runs as a child process on a free local port for the whole
session (it keeps objects in memory).  `FaultProxy` sits between the driver
and moto; a test tells it, per request kind, to answer 500/503, to slow
down, or to cut the connection half-way through a request or response body,
and reads back what it injected, so a fault test can prove the fault happened.

Credentials are dummies, set in the environment for the session, so every
child process (pitr subprocesses, PostgreSQL's restore_command) gets them
the way a worker would: through boto3's standard chain.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pitrflow.config import parse_config
from tests.conftest import Env, free_port

TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "pitrflow-test-key",
    "AWS_SECRET_ACCESS_KEY": "pitrflow-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent/pitrflow-test-aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/pitrflow-test-aws-credentials",
}
# Kept small so a test of "retries exhausted" ends in seconds; the product's default is 10.
TEST_MAX_ATTEMPTS = "4"


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    headers: dict[str, str]

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.target.split("?", 1)[1] if "?" in self.target else ""

    def is_part_upload(self) -> bool:
        return self.method == "PUT" and "partNumber=" in self.query and "uploadId=" in self.query

    def is_put(self) -> bool:
        return self.method == "PUT"

    def is_object_get(self) -> bool:
        return self.method == "GET" and "list-type" not in self.query and \
            "uploads" not in self.query and "tagging" not in self.query and \
            self.path.count("/") >= 2

    def is_listing(self) -> bool:
        return self.method == "GET" and "list-type=2" in self.query


def anything(_: Request) -> bool:
    return True


def key_contains(text: str, kind: Callable[[Request], bool] = anything,
                 ) -> Callable[[Request], bool]:
    return lambda req: text in req.path and kind(req)


@dataclass
class Fault:
    """What to do to matching requests: `fail` of every `fail + passes` get the fault."""

    kind: str  # "status" | "cut_request" | "cut_response"
    match: Callable[[Request], bool]
    times: float = math.inf
    status: int = 503
    fail: int = 1
    passes: int = 0
    seen: int = 0
    injected: int = 0
    injected_on: list[str] = field(default_factory=list)

    def applies(self, req: Request) -> bool:
        if self.injected >= self.times or not self.match(req):
            return False
        position = self.seen % (self.fail + self.passes)
        self.seen += 1
        if position >= self.fail:
            return False
        self.injected += 1
        self.injected_on.append(f"{req.method} {req.target}")
        return True


_REASONS = {500: ("Internal Server Error", "InternalError"),
            502: ("Bad Gateway", "BadGateway"),
            503: ("Slow Down", "SlowDown")}


class FaultProxy:
    """An HTTP/1.1 proxy for one upstream, one request per client connection."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self.bytes_per_second: float | None = None
        self.latency = 0.0
        self.requests: list[str] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self._thread = threading.Thread(target=self._accept, daemon=True, name="fault-proxy")
        self._stopping = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):
            self._listener.close()

    # --- control, from the tests ---

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def fail(self, status: int, match: Callable[[Request], bool] = anything, *,
             times: float = math.inf, fail: int = 1, passes: int = 0) -> Fault:
        return self.add(Fault("status", match, times, status, fail, passes))

    def cut_requests(self, match: Callable[[Request], bool], *, times: float = math.inf,
                     ) -> Fault:
        return self.add(Fault("cut_request", match, times))

    def cut_responses(self, match: Callable[[Request], bool], *, times: float = math.inf,
                      ) -> Fault:
        return self.add(Fault("cut_response", match, times))

    def slow(self, bytes_per_second: float | None, latency: float = 0.0) -> None:
        self.bytes_per_second = bytes_per_second
        self.latency = latency

    def reset(self) -> None:
        with self._lock:
            self._faults.clear()
            self.requests.clear()
            self.peak_in_flight = self.in_flight
        self.slow(None, 0.0)

    # --- serving ---

    def _accept(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _pick(self, req: Request) -> Fault | None:
        with self._lock:
            self.requests.append(f"{req.method} {req.target}")
            for fault in self._faults:
                if fault.applies(req):
                    return fault
        return None

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            self._serve_one(client)
        except OSError:
            pass
        finally:
            with self._lock:
                self.in_flight -= 1
            with contextlib.suppress(OSError):
                client.close()

    def _serve_one(self, client: socket.socket) -> None:
        rfile = client.makefile("rb")
        request_line = rfile.readline(65537)
        if not request_line.strip():
            return
        method, target, _ = request_line.decode("latin-1").split(" ", 2)
        raw_headers: list[tuple[str, str]] = []
        while True:
            line = rfile.readline(65537)
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            raw_headers.append((name.strip(), value.strip()))
        headers = {n.lower(): v for n, v in raw_headers}
        req = Request(method, target, headers)
        if headers.get("expect", "").lower() == "100-continue":
            client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        fault = self._pick(req)
        length = int(headers.get("content-length", "0") or 0)
        if fault is not None and fault.kind == "cut_request":
            rfile.read(length // 2)
            _reset(client)
            return
        body = _read_body(rfile, headers, length)
        if self.latency:
            time.sleep(self.latency)
        if fault is not None and fault.kind == "status":
            client.sendall(_error_response(fault.status, method))
            return
        forwarded = [(n, v) for n, v in raw_headers
                     if n.lower() not in ("expect", "connection", "keep-alive",
                                          "proxy-connection")]
        head = [request_line.decode("latin-1").rstrip("\r\n")]
        head += [f"{n}: {v}" for n, v in forwarded] + ["Connection: close"]
        with socket.create_connection(self.upstream, timeout=60) as upstream:
            upstream.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            self._send(upstream, body)
            status_line, response_headers, response_body = _read_response(upstream)
        out = [status_line] + [f"{n}: {v}" for n, v in response_headers
                               if n.lower() not in ("connection", "keep-alive")]
        out.append("Connection: close")
        client.sendall(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
        if fault is not None and fault.kind == "cut_response":
            self._send(client, response_body[: len(response_body) // 2])
            _reset(client)
            return
        self._send(client, response_body)

    def _send(self, sock: socket.socket, data: bytes) -> None:
        if not self.bytes_per_second:
            sock.sendall(data)
            return
        step = 64 * 1024
        for start in range(0, len(data), step):
            piece = data[start:start + step]
            sock.sendall(piece)
            time.sleep(len(piece) / self.bytes_per_second)


def _reset(sock: socket.socket) -> None:
    """Close with RST, as a dropped connection looks to the peer."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _read_body(rfile: Any, headers: dict[str, str], length: int) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        raw = bytearray()
        while True:
            size_line = rfile.readline()
            raw += size_line
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            chunk = rfile.read(size + 2)
            raw += chunk
            if size == 0:
                # trailers until an empty line
                while chunk not in (b"\r\n", b""):
                    chunk = rfile.readline()
                    raw += chunk
                return bytes(raw)
    return rfile.read(length) if length else b""


def _read_response(upstream: socket.socket) -> tuple[str, list[tuple[str, str]], bytes]:
    ufile = upstream.makefile("rb")
    status_line = ufile.readline(65537).decode("latin-1").rstrip("\r\n")
    headers: list[tuple[str, str]] = []
    while True:
        line = ufile.readline(65537)
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers.append((name.strip(), value.strip()))
    return status_line, headers, ufile.read()


def _error_response(status: int, method: str) -> bytes:
    reason, code = _REASONS.get(status, ("Error", "InternalError"))
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>injected by the test proxy</Message><RequestId>proxy</RequestId>"
            f"</Error>").encode()
    if method == "HEAD":
        body = b""
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode("latin-1") + body


# --------------------------------------------------------------------------- the server


@dataclass
class S3Server:
    """moto's S3 endpoint (`url`) and the fault proxy in front of it (`proxy.url`)."""

    url: str
    proxy: FaultProxy

    def client(self, endpoint: str | None = None) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=endpoint or self.url, region_name="us-east-1",
                            config=Config(s3={"addressing_style": "path"},
                                          retries={"mode": "standard", "max_attempts": 2}))

    def new_bucket(self, object_lock: bool = False) -> str:
        """A fresh bucket; with `object_lock`, versioned and Object Lock enabled."""
        name = f"pitrflow-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=object_lock)
        return name

    def kms_key(self) -> str:
        """A new key in moto's KMS (served on the same endpoint as its S3)."""
        import boto3

        kms = boto3.client("kms", endpoint_url=self.url, region_name="us-east-1")
        return str(kms.create_key(Description="pitrflow test")["KeyMetadata"]["KeyId"])


def start_moto(port: int, log: Path, extra_env: dict[str, str] | None = None,
               ) -> subprocess.Popen[bytes]:
    env = {**os.environ, **TEST_ENV, **(extra_env or {})}
    with open(log, "ab") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                 "-p", str(port)], stdout=sink, stderr=sink, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"moto_server did not start on port {port}; see {log}")


def stop_moto(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in TEST_ENV.items():
            patch.setenv(name, value)
        patch.setenv("AWS_MAX_ATTEMPTS", TEST_MAX_ATTEMPTS)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_RETRY_MODE"):
            patch.delenv(name, raising=False)
        port = free_port()
        proc = start_moto(port, tmp_path_factory.mktemp("moto") / "moto.log")
        proxy = FaultProxy(("127.0.0.1", port))
        proxy.start()
        try:
            yield S3Server(f"http://127.0.0.1:{port}", proxy)
        finally:
            proxy.stop()
            stop_moto(proc)


@pytest.fixture
def s3(s3_server: S3Server) -> Iterator[S3Server]:
    s3_server.proxy.reset()
    yield s3_server
    s3_server.proxy.reset()


def use_s3_repository(env: Env, bucket: str, endpoint: str, prefix: str = "pitr") -> Env:
    """Point a test's config file (and its Env) at an S3 repository instead of a directory."""
    text = env.config_path.read_text()
    old = f'path = "{env.root / "repo"}"'
    assert old in text, text
    text = text.replace(old, f'url = "s3://{bucket}/{prefix}"\nendpoint_url = "{endpoint}"\n'
                             'region = "us-east-1"')
    env.config_path.write_text(text)
    env.config = parse_config(text, env.config_path)
    return env


def bucket_of(env: Env) -> str:
    url = env.config.repository.url
    assert url is not None
    return url.removeprefix("s3://").split("/", 1)[0]


@pytest.fixture
def make_s3_env(make_env: Callable[..., Env], s3: S3Server) -> Callable[..., Env]:
    def factory(cluster: Any, extra: str = "", *, via_proxy: bool = True,
                repo_extra: str = "") -> Env:
        env = make_env(cluster, extra, repo_extra)
        return use_s3_repository(env, s3.new_bucket(), s3.proxy.url if via_proxy else s3.url)

    return factory
