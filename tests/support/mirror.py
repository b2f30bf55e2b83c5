"""The one loopback mirror server of the tests and tools: a folder and/or files in memory served on 127.0.0.1
with ``Content-Length`` and ``Range``, which can be made hostile on demand.

:class:`MirrorServer` serves ``folder`` (files under their cache names) and ``files`` (``{name: bytes}``, which take
precedence) as a ``ROMLIB_MIRROR`` or as official addresses. Each request is logged in :attr:`MirrorServer.requests`
as ``(method, path, Range header)``; names in :attr:`MirrorServer.hidden` answer 404. A name's entry in
:attr:`MirrorServer.misbehave` (one behaviour, or a list used one per request) makes the next answers for it hostile:

* ``"ignore-range"``: a ``Range`` request answered 200 with the whole file;
* ``"wrong-total"``: a 206 whose ``Content-Range`` total is 1000 bytes too large;
* ``("cut", n)``: ``n`` bytes of the announced body, then the connection is shut;
* ``("delay", s)``: ``s`` seconds between 4 kB blocks (a slow server);
* ``("drip", s, n)``: ``n`` bytes every ``s`` seconds, until the client gives up (a server that never finishes);
* ``("stall", n, s)``: ``n`` bytes, then nothing for ``s`` seconds, then the connection is shut;
* ``"no-length"``: the whole body without ``Content-Length`` (the end is the connection's close);
* ``"half-no-length"``: the first half of the body without ``Content-Length``, then the close (a body cut short
  that nothing announces);
* ``"gzip"``: the body gzip-compressed, with ``Content-Encoding: gzip`` and the compressed length;
* ``("encoding", name)``: the body as is, labelled ``Content-Encoding: name``;
* ``("redirect", url)``: 302 to ``url``;
* ``("status", code)``: that HTTP status with an empty body;
* ``("body", bytes)``: these bytes instead of the file, with their length.

The server stops by itself after ``max_seconds`` even if never closed, and each socket operation times out after
``timeout`` seconds, so a test never hangs on it.
"""
from __future__ import annotations

import gzip
import http.server
import threading
import time
import urllib.parse
from pathlib import Path

__all__ = ["MirrorServer"]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, *args):  # quiet; requests go to server.requests
        pass

    def _name(self) -> str:
        return urllib.parse.unquote(self.path.split("?", 1)[0].lstrip("/"))

    def _data(self, name: str) -> bytes | Path | None:
        srv = self.server
        if not name or name in srv.hidden:
            return None
        if name in srv.files:
            return srv.files[name]
        if srv.folder is None or "/" in name or name.startswith("."):
            return None
        p = srv.folder / name
        return p if p.is_file() else None

    def _how(self, name: str):
        plan = self.server.misbehave.get(name)
        if isinstance(plan, list):
            how = plan.pop(0) if plan else None
            if not plan:
                self.server.misbehave.pop(name, None)
            return how
        return self.server.misbehave.pop(name, None)

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, body: bool):
        rng = self.headers.get("Range")
        self.server.requests.append((self.command, self.path, rng))
        name = self._name()
        data = self._data(name)
        if data is None:
            self.send_error(404)
            return
        how = self._how(name)
        kind = how[0] if isinstance(how, tuple) else how
        if kind == "redirect":
            self.send_response(302)
            self.send_header("Location", how[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if kind == "status":
            self.send_response(how[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = data.read_bytes() if isinstance(data, Path) else data
        if kind == "body":
            data = how[1]
        size = len(data)
        start = 0
        if rng and rng.startswith("bytes=") and kind != "ignore-range":
            start = int(rng[6:].partition("-")[0] or 0)
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            total = size + 1000 if kind == "wrong-total" else size
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{total}")
        else:
            self.send_response(200)
        out = data[start:]
        if kind == "gzip":
            out = gzip.compress(out)
            self.send_header("Content-Encoding", "gzip")
        elif kind == "encoding":
            self.send_header("Content-Encoding", how[1])
        if kind == "half-no-length":
            out = out[:len(out) // 2]
        if kind not in ("no-length", "half-no-length"):
            self.send_header("Content-Length", str(len(out)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if not body:
            return
        try:
            self._send(out, how, kind)
        except (BrokenPipeError, ConnectionResetError, TimeoutError, OSError):
            pass  # the client went away (as a client that gives up on a hostile server does)

    def _send(self, out: bytes, how, kind) -> None:
        if kind == "cut":
            self.wfile.write(out[:how[1]])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        if kind == "stall":
            self.wfile.write(out[:how[1]])
            self.wfile.flush()
            self._sleep(how[2])
            self.connection.shutdown(2)
            return
        if kind == "drip":
            for i in range(0, len(out), how[2]):
                self.wfile.write(out[i:i + how[2]])
                self.wfile.flush()
                if not self._sleep(how[1]):
                    return
            return
        delay = how[1] if kind == "delay" else 0.0
        for i in range(0, len(out), 4096):
            self.wfile.write(out[i:i + 4096])
            if delay:
                time.sleep(delay)

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless the server is closing; False when it is."""
        return not self.server.closing.wait(seconds)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    folder: Path | None
    files: dict
    hidden: set
    requests: list
    misbehave: dict
    closing: threading.Event


class MirrorServer:
    """Serve ``folder`` and ``files`` on 127.0.0.1 (a free port); a context manager (see the module docstring).

    ``url``: the base address; ``requests``: ``(method, path, Range header)`` of each request; ``log``: ``(path,
    Range header)`` of each; ``hidden``: names answered with 404; ``misbehave``: ``{name: behaviour or [behaviours]}``;
    ``files``: ``{name: bytes}`` served beside (and before) the folder's."""

    def __init__(self, folder: str | Path | None = None, *, files: dict | None = None, max_seconds: float = 900.0,
                 timeout: float = 10.0):
        handler = type("Handler", (_Handler,), {"timeout": timeout})
        self._srv = _Server(("127.0.0.1", 0), handler)
        self._srv.folder = Path(folder) if folder is not None else None
        self._srv.files, self._srv.hidden, self._srv.requests = dict(files or {}), set(), []
        self._srv.misbehave, self._srv.closing = {}, threading.Event()
        self.port = self._srv.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._timer = threading.Timer(max_seconds, self.close)
        self._timer.daemon = True
        self._closed = False

    @property
    def requests(self) -> list:
        return self._srv.requests

    @property
    def log(self) -> list:
        return [(path, rng) for _, path, rng in self._srv.requests]

    @property
    def hidden(self) -> set:
        return self._srv.hidden

    @property
    def files(self) -> dict:
        return self._srv.files

    @property
    def misbehave(self) -> dict:
        return self._srv.misbehave

    def address(self, name: str) -> str:
        """The address of ``name`` on this server."""
        return f"{self.url}/{urllib.parse.quote(name)}"

    def start(self) -> "MirrorServer":
        self._thread.start()
        self._timer.start()
        return self

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._srv.closing.set()
            self._timer.cancel()
            self._srv.shutdown()
            self._srv.server_close()

    def __enter__(self) -> "MirrorServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
