"""A local HTTP server on 127.0.0.1 for the download tests: serves one file, with switches for the
failures under test (dropped connections, no Range support, slow or stalled bodies, TLS)."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time


class Server:
    """Serves one file at /NAME on 127.0.0.1, with switches for the failures under test."""

    def __init__(self, body: bytes, name: str = "cifar-10-python.tar.gz", tls=None):
        self.body, self.name = body, name
        self.ranges: list[str | None] = []  # the Range header of every request
        self.drop_after: int | None = None  # first response stops after this many bytes
        self.support_range = True
        self.etag = '"v1"'
        self.wrong_start = 0  # resume at this many bytes past the asked start
        self.extra = b""  # bytes appended to every response beyond its Content-Length
        self.any_path = False  # serve the file at any path, not only /NAME
        # How the next responses misbehave, one entry each: "trickle" sends the body a byte at a
        # time, "trickle-headers" the status line and headers, "silent" the headers and then
        # nothing (each for at most 5 s, while the client stays)
        self.slow: list[str] = []
        self.delay = 0.02  # seconds between trickled bytes
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def trickle(self, data: bytes):
                deadline = time.monotonic() + 5
                try:
                    for i in range(len(data)):
                        if time.monotonic() > deadline:
                            return
                        self.wfile.write(data[i : i + 1])
                        self.wfile.flush()
                        time.sleep(server.delay)
                except OSError:  # the client gave up
                    pass

            def misbehave(self, mode: str):
                head = (
                    f"HTTP/1.1 200 OK\r\nContent-Length: {len(server.body)}\r\nETag: {server.etag}\r\n\r\n"
                ).encode()
                if mode == "trickle-headers":
                    self.trickle(head)
                    return
                self.wfile.write(head)
                self.wfile.flush()
                if mode == "trickle":
                    self.trickle(server.body)
                else:  # silent: wait until the client gives up
                    self.connection.settimeout(5)
                    try:
                        self.connection.recv(1)
                    except OSError:
                        pass
                self.close_connection = True

            def do_GET(self):
                if self.path != f"/{server.name}" and not server.any_path:
                    self.send_error(404)
                    return
                if server.slow:
                    server.ranges.append(self.headers.get("Range"))
                    self.misbehave(server.slow.pop(0))
                    return
                rng = self.headers.get("Range")
                server.ranges.append(rng)
                if_range = self.headers.get("If-Range")
                start = int(rng.split("=")[1].split("-")[0]) if rng and server.support_range else 0
                if if_range is not None and if_range != server.etag:
                    start = 0  # the file changed: send all of it (RFC 9110 If-Range)
                if start >= len(server.body) and start:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(server.body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start += server.wrong_start if start else 0
                payload = server.body[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header(
                        "Content-Range", f"bytes {start}-{len(server.body) - 1}/{len(server.body)}"
                    )
                    payload += server.extra  # a resumed response longer than its Content-Range says
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("ETag", server.etag)
                self.end_headers()
                if server.drop_after is not None:
                    cut, server.drop_after = server.drop_after, None
                    self.wfile.write(payload[:cut])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(payload)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:  # an ssl.SSLContext with the server's certificate: serve https://
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        scheme = "http" if tls is None else "https"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}/{name}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def run(runner, *args):
    """``cifarlin download ARGS`` in-process: its result and, with --json, its document."""
    from cifarlin.cli import app

    r = runner.invoke(app, ["download", *map(str, args)])
    return r, (json.loads(r.stdout) if r.exit_code == 0 and "--json" in args else None)
