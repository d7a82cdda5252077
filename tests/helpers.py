"""Test helpers: routes.yaml writing, a recording upstream, raw socket exchanges, subprocess proxies."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Self

import yaml
from aiohttp import web

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
REPO = Path(__file__).resolve().parent.parent


def routes_yaml(upstreams: dict[str, str], routes: list[dict[str, Any]], **top: Any) -> str:
    """A routes.yaml text: listen and admin on free ports unless given."""
    doc = {"version": 1, "listen": "127.0.0.1:0", "admin": {"listen": "127.0.0.1:0"},
           "upstreams": {name: ({"url": u} if isinstance(u, str) else u) for name, u in upstreams.items()},
           "routes": routes, **top}
    return yaml.safe_dump(doc, sort_keys=False)


def route(name: str, path: str = "/", legacy: str = "legacy", **more: Any) -> dict[str, Any]:
    return {"name": name, "match": {"path": path, **more.pop("match", {})}, "legacy": legacy, **more}


@dataclass
class Seen:
    """One request as an upstream received it."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def names(self) -> set[str]:
        return {k.lower() for k, _ in self.headers}


async def answer_json(request: web.BaseRequest) -> web.StreamResponse:
    return web.json_response({"path": request.raw_path})


@dataclass
class Upstream:
    """A real HTTP server on 127.0.0.1 that records every request reaching it."""

    name: str
    handler: Handler = answer_json
    seen: list[Seen] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(Seen(request.method, request.raw_path, list(request.headers.items()), body))
        response = await self.handler(request)
        response.headers.setdefault("X-Upstream", self.name)
        return response


async def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes to 127.0.0.1:port and read until the server closes (or `timeout`)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        received, closed = await read_for(reader, timeout)
    finally:
        writer.close()
    return received if closed else received + b"<<timeout: connection still open>>"


async def sent_regardless(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send `data` to 127.0.0.1:port as a hostile client would, going on when the proxy hangs up mid-way,
    and what came back within `timeout` (b"" when the connection was reset)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        try:
            await writer.drain()
        except ConnectionError:
            pass
        received, _ = await read_for(reader, timeout)
        return received
    except ConnectionError:
        return b""
    finally:
        writer.close()


async def read_for(reader: asyncio.StreamReader, timeout: float) -> tuple[bytes, bool]:
    """What arrives within `timeout`, and whether the server closed the connection by then."""
    chunks = []
    try:
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                chunks.append(chunk)
    except TimeoutError:
        return b"".join(chunks), False
    return b"".join(chunks), True


async def eventually(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05,
                     what: str | Callable[[], str] = "") -> Any:
    """Poll `check` (a function, or a coroutine function) until it returns something truthy, and return
    that; after `timeout` seconds, fail with what it returned last, and `what` (or what it returns then:
    the state that explains the failure) in front."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if asyncio.iscoroutine(found):
            found = await found
        if found:
            return found
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"{said + ': ' if said else ''}not so within {timeout:g}s; last seen: {found!r}")
        await asyncio.sleep(interval)


def admin_json(port: int, path: str) -> Any:
    """GET an admin path of a proxy process, as JSON."""
    return json.loads(_get(port, path).partition(b"\r\n\r\n")[2])


def answers(raw: bytes) -> list[tuple[int, bytes]]:
    """The (status, body) of each answer in a raw HTTP/1.1 stream framed by Content-Length."""
    found = []
    while raw.startswith(b"HTTP/1.1 "):
        head, _, rest = raw.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?im)^content-length: *(\d+)", head)[1])
        found.append((status_of(head), rest[:length]))
        raw = rest[length:]
    return found


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/") else 0


def json_body(raw: bytes) -> dict[str, Any]:
    return json.loads(raw.partition(b"\r\n\r\n")[2])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProxyProcess:
    """`strangler serve` in a child process, for signals, memory and anything process-wide."""

    def __init__(self, config: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.log = config.parent / "proxy.log"
        doc = yaml.safe_load(config.read_text())
        self.port = int(doc["listen"].rsplit(":", 1)[1])
        self.admin_port = int(doc["admin"]["listen"].rsplit(":", 1)[1])
        self._log_file = open(self.log, "wb")
        self._signalled = False
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--config", str(config), *args],
            stdout=self._log_file, stderr=subprocess.STDOUT, cwd=config.parent,
            env={**os.environ, **(env or {})})
        try:
            self.wait_ready()
        except BaseException:
            self.stop(10)  # never leave a child behind
            raise

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"proxy exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.admin_port), timeout=0.2):
                    if b"ready" in _get(self.admin_port, "/readyz"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"proxy did not become ready:\n{self.log.read_text()}")

    def rss_kib(self) -> int:
        return _status_kib(self.proc.pid, "VmRSS")

    def peak_rss_kib(self) -> int:
        return _status_kib(self.proc.pid, "VmHWM")

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]

    def signal(self, sig: int) -> None:
        self._signalled = True
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (unless a signal was sent already) and the exit status; SIGKILL after `timeout`."""
        if not self._signalled and self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)
        finally:
            self._log_file.close()


def _get(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def _status_kib(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise KeyError(field_name)


Reply = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """A listener on 127.0.0.1 whose connections `_serve` takes as raw bytes."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None

    async def start(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class RawUpstream(RawServer):
    """An upstream that speaks raw bytes: for answers aiohttp would never produce, and for
    seeing exactly when the proxy hangs up."""

    def __init__(self, reply: Reply) -> None:
        super().__init__()
        self.reply = reply
        self.close_after_reply = False  # an answer delimited by the connection's close
        self.heads: list[bytes] = []
        self.hung_up = asyncio.Event()

    @classmethod
    def answering(cls, response: bytes) -> RawUpstream:
        async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(response)
            await writer.drain()
        return cls(reply)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.heads.append(await reader.readuntil(b"\r\n\r\n"))
            await self.reply(reader, writer)
            while not self.close_after_reply and await reader.read(65536):  # until the proxy hangs up
                pass
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # cancelled: the test is over
        finally:
            self.hung_up.set()
            writer.close()


class Blackhole:
    """A listener whose accept queue is full: connections to it hang until they time out."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(0)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._fillers = []
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            try:
                filler.connect(self._listener.getsockname())
            except BlockingIOError:
                pass
            self._fillers.append(filler)

    def close(self) -> None:
        for s in [*self._fillers, self._listener]:
            s.close()
