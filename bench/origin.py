#!/usr/bin/env python3
"""The benchmark's origin: a slow API that counts what it serves.

    GET  /item/<id>?size=N   N bytes (default 1024) after a fixed delay; counted
    GET  /json/<id>?size=N   a JSON document of about N bytes (default 32768): records with
                             varied values (names, emails, scores, dates), the same for the
                             same id and size; same delay, counted
    GET  /__count            {"count": <item requests served since the last reset>,
                              "first_at": <time.monotonic() when the first of them arrived>}
    POST /__reset            sets the count to 0

`first_at` is CLOCK_MONOTONIC, which every process on the machine shares: a client can tell
how long after its own first request the origin saw the first one (the time a proxy spends
before it asks the origin on a miss).

HTTP/1.1 with keep-alive, Python standard library only (asyncio), so it serves any number of
concurrent requests: the delay is an `asyncio.sleep`, not a blocked thread. Responses carry
no cache headers at all (like the legacy Flask API cachalot is made for): every proxy in the
benchmark decides the 60 s TTL by its own configuration.

    python3 bench/origin.py --port 8000 --delay-ms 20

Prints "listening on HOST:PORT" once bound (port 0 picks a free one).
`--print-json SIZE` prints the JSON document of that size (id "doc") and exits.
"""

import argparse
import asyncio
import json
import random
import signal
import sys
import time
from urllib.parse import parse_qs, urlsplit

MAX_SIZE = 64 * 1024 * 1024

FIRST = ["Alice", "Bob", "Carol", "Dmitri", "Eve", "Farah", "Gustavo", "Hana", "Ivan", "Jun",
         "Kwame", "Lena", "Mateo", "Nadia", "Omar", "Priya"]
LAST = ["Martin", "Chen", "Diaz", "Okafor", "Novak", "Sato", "Haddad", "Kowalski", "Silva",
        "Nguyen", "Schmidt", "Rossi"]
ORGS = ["Acme University", "Globex Training", "Initech Academy", "Umbrella Institute",
        "Stark Learning", "Wayne College"]
TITLES = ["Certified Data Steward", "Cloud Operations Associate", "Security Fundamentals",
          "Applied Statistics", "Network Design", "Project Management Professional",
          "Machine Learning Engineer", "Accessibility Specialist"]


def json_document(size: int, seed: str = "doc") -> bytes:
    """A JSON list of credential records, as an API's list endpoint sends, of at most `size`
    bytes (as close as whole records allow): every value varies (ids, names, emails, scores,
    timestamps), drawn from a generator seeded by `seed`, so the same call gives the same
    bytes on every run and machine."""
    rng = random.Random(f"cachalot-bench-{seed}")
    records, length = [], len(b'{"items":[],"count":0}') + 8
    while True:
        first, last = rng.choice(FIRST), rng.choice(LAST)
        record = json.dumps({
            "id": f"{rng.getrandbits(40):010x}",
            "holder": f"{first} {last}",
            "email": f"{first.lower()}.{last.lower()}{rng.randrange(100)}@example.org",
            "org": rng.choice(ORGS),
            "title": rng.choice(TITLES),
            "status": "valid" if rng.random() < 0.9 else "revoked",
            "score": round(rng.uniform(40, 100), 2),
            "issued_at": f"2026-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}T"
                         f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}Z",
            "verifications": rng.randrange(0, 5000),
        }, separators=(",", ":"))
        if length + len(record) + 1 > size and records:
            break
        records.append(record)
        length += len(record) + 1
        if length >= size:
            break
    return f'{{"items":[{",".join(records)}],"count":{len(records)}}}'.encode()


class Origin:
    def __init__(self, delay_s: float):
        self.delay_s = delay_s
        self.count = 0
        self.first_at = None
        self.bodies: dict[int, bytes] = {}
        self.documents: dict[tuple[str, int], bytes] = {}

    def body(self, size: int) -> bytes:
        body = self.bodies.get(size)
        if body is None:
            pattern = b"cachalot-bench-origin-"
            body = (pattern * (size // len(pattern) + 1))[:size]
            self.bodies[size] = body
        return body

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                try:
                    method, target, version = lines[0].split(" ", 2)
                except ValueError:
                    await self.respond(writer, 400, b"bad request line\n", close=True)
                    return
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0") or 0)
                if length:
                    await reader.readexactly(length)
                close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
                await self.route(writer, method, target, close)
                if close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - the peer may already be gone
                pass

    async def route(self, writer, method: str, target: str, close: bool):
        url = urlsplit(target)
        if url.path.startswith(("/item/", "/json/")) and method in ("GET", "HEAD"):
            json_doc = url.path.startswith("/json/")
            if self.first_at is None:
                self.first_at = time.monotonic()
            try:
                size = int(parse_qs(url.query).get("size", ["32768" if json_doc else "1024"])[0])
            except ValueError:
                size = -1
            if not 0 <= size <= MAX_SIZE:
                await self.respond(writer, 400, b"size must be 0..64MiB\n", close)
                return
            if self.delay_s > 0:
                await asyncio.sleep(self.delay_s)
            self.count += 1
            if json_doc:
                key = (url.path[len("/json/"):], size)
                body = self.documents.get(key)
                if body is None:
                    body = self.documents[key] = json_document(size, key[0])
                kind = "application/json"
            else:
                body = self.body(size)
                kind = "application/octet-stream"
            await self.respond(writer, 200, body, close, kind, head_only=method == "HEAD")
        elif url.path == "/__count" and method == "GET":
            await self.respond(writer, 200, json.dumps({"count": self.count, "first_at": self.first_at}).encode(), close,
                               "application/json")
        elif url.path == "/__reset" and method == "POST":
            self.count = 0
            self.first_at = None
            await self.respond(writer, 200, b'{"count": 0}', close, "application/json")
        else:
            await self.respond(writer, 404, b"not found\n", close)

    @staticmethod
    async def respond(writer, status: int, body: bytes, close: bool,
                      content_type: str = "text/plain", head_only: bool = False):
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "OK")
        head = (
            f"HTTP/1.1 {status} {reason}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"{'Connection: close' if close else 'Connection: keep-alive'}\r\n\r\n"
        ).encode()
        writer.write(head if head_only else head + body)
        await writer.drain()


async def main(host: str, port: int, delay_ms: float):
    origin = Origin(delay_ms / 1000.0)
    server = await asyncio.start_server(origin.handle, host, port, backlog=4096, limit=1 << 16)
    bound = server.sockets[0].getsockname()
    print(f"listening on {bound[0]}:{bound[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--print-json", type=int, metavar="SIZE",
                        help="print the JSON document of SIZE bytes (id \"doc\") and exit")
    args = parser.parse_args()
    if args.print_json is not None:
        sys.stdout.buffer.write(json_document(args.print_json))
        sys.exit(0)
    try:
        asyncio.run(main(args.host, args.port, args.delay_ms))
    except KeyboardInterrupt:
        sys.exit(0)
