"""A real S3-compatible server for the remote tests: moto's server mode on a loopback port,
behind a small HTTP proxy (also on loopback) that counts requests and injects faults:
throttling (503 SlowDown), connections dropped in the middle of a response body, and slow
answers."""

from __future__ import annotations

import contextlib
import http.client
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LOOPBACK = "127.0.0.1"


class Faults:
    """What the proxy does to the next matching requests (bounded counts)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.throttle = 0  # next GETs answered 503 SlowDown
        self.drop = 0  # next GETs cut off halfway through the body
        self.delay = 0.0  # seconds every matching GET waits before it is answered
        self.match = ""  # only requests whose path contains this
        self.log: list[tuple[str, str]] = []  # (method, path) of every request

    def take(self, kind: str, method: str, path: str) -> bool:
        with self.lock:
            if method != "GET" or self.match not in path or getattr(self, kind) <= 0:
                return False
            setattr(self, kind, getattr(self, kind) - 1)
            return True

    def gets(self, suffix: str) -> int:
        with self.lock:
            return sum(1 for m, p in self.log if m == "GET" and p.split("?")[0].endswith(suffix))


def _handler(upstream: int, faults: Faults) -> type[BaseHTTPRequestHandler]:
    class Proxy(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _forward(self) -> None:
            with faults.lock:
                faults.log.append((self.command, self.path))
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            with faults.lock:
                delay = faults.delay if self.command == "GET" and faults.match in self.path else 0
            time.sleep(delay)
            if faults.take("throttle", self.command, self.path):
                msg = b"<Error><Code>SlowDown</Code><Message>Slow down.</Message></Error>"
                self.send_response(503)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(msg)))
                self.end_headers()
                self.wfile.write(msg)
                return
            conn = http.client.HTTPConnection(LOOPBACK, upstream, timeout=30)
            headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            conn.close()
            drop = faults.take("drop", self.command, self.path) and len(data) > 1
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            if drop:
                self.send_header("Connection", "close")
            self.end_headers()
            if drop:  # half the body, then the connection goes away
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    return Proxy


class S3Server:
    """moto's S3 server and the fault proxy, both on loopback; ``endpoint`` is where clients go.

    ``own_process=True`` runs moto in a child process (a benchmark then measures the client,
    not a Python server sharing its interpreter); ``proxy=False`` sends clients straight to
    moto (no faults, no request log, no extra copy of every body)."""

    def __init__(self, *, proxy: bool = True, own_process: bool = False) -> None:
        port = _free_port()
        self.moto: Any = None
        self.child: subprocess.Popen[bytes] | None = None
        if own_process:
            self.child = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            _wait_for(port, self.child)
        else:
            from moto.server import ThreadedMotoServer

            self.moto = ThreadedMotoServer(ip_address=LOOPBACK, port=port, verbose=False)
            self.moto.start()
        self.moto_endpoint = f"http://{LOOPBACK}:{port}"
        self.faults = Faults()
        self.proxy: ThreadingHTTPServer | None = None
        self.endpoint = self.moto_endpoint
        if proxy:
            self.proxy = ThreadingHTTPServer((LOOPBACK, 0), _handler(port, self.faults))
            self.proxy.daemon_threads = True
            threading.Thread(target=self.proxy.serve_forever, daemon=True).start()
            self.endpoint = f"http://{LOOPBACK}:{self.proxy.server_address[1]}"

    def env(self) -> dict[str, str]:
        """The environment variables a client uses to reach the server (never anything but
        loopback: the instance-metadata endpoint points at a closed loopback port)."""
        return {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_METADATA_ENDPOINT": f"http://{LOOPBACK}:9",
            "TOKENLOOM_MAX_RETRIES": "6",
            "TOKENLOOM_RETRY_TIMEOUT": "20",
        }

    def _client(self) -> Any:
        """A signed S3 client straight to moto (past the proxy: no faults, not counted)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.moto_endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )

    def make_bucket(self, name: str) -> None:
        client = self._client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=name)

    def put_object(self, bucket: str, key: str, data: bytes) -> None:
        self._client().put_object(Bucket=bucket, Key=key, Body=data)

    def get_object(self, bucket: str, key: str) -> bytes:
        body: bytes = self._client().get_object(Bucket=bucket, Key=key)["Body"].read()
        return body

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.shutdown()
            self.proxy.server_close()
        if self.moto is not None:
            self.moto.stop()
        if self.child is not None:
            self.child.terminate()
            self.child.wait(timeout=30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for(port: int, child: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Until the child's server accepts connections on `port` (or the child exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"moto's server exited with status {child.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.5):
            return
        time.sleep(0.1)
    child.kill()
    raise RuntimeError(f"moto's server did not listen on port {port} within {timeout:.0f} s")
