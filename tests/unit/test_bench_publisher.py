"""bench/c/publisher, the benchmark's HTTP API load generator: it must sign as the Pusher HTTP API
expects (docs/protocol.md §6.3) and count the TCP connections a `Connection: close` server costs it,
since the benchmark reports that churn beside every HTTP figure. Also checks that every bench module
still imports (nothing else in the suite runs bench/)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from bench.cli import parse_args
from bench.cpublisher import C_PUBLISHER_SOURCE
from bench.scenarios.registry import GROUPS
from bench.signing import sign_query
from bench.sizes import FULL, QUICK

KEY, SECRET = "bench-key", "bench-secret"


@pytest.fixture(scope="module")
def publisher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    binary = tmp_path_factory.mktemp("publisher") / "publisher"
    subprocess.run(["cc", "-O2", "-Wall", "-o", str(binary), str(C_PUBLISHER_SOURCE), "-lcrypto"], check=True)
    return binary


@pytest.mark.parametrize("secret", [SECRET, "s" * 100])  # longer than a SHA-256 block: the key is hashed first
def test_c_publisher_signs_like_the_python_signer(publisher: Path, secret: str) -> None:
    body = b'{"name":"e","data":"x","channels":["c"]}'
    out = subprocess.run(
        [str(publisher), "--sign", KEY, secret, "/apps/1/events", "1700000000", body.decode()],
        check=True,
        capture_output=True,
    )
    assert out.stdout.decode().strip() == sign_query("POST", "/apps/1/events", body, KEY, secret, 1700000000)


async def _serve(close_each: bool) -> tuple[asyncio.Server, list[str]]:
    """A loopback HTTP server that checks each request's signature; answers `Connection: close` if asked."""
    problems: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *headers = head.decode().split("\r\n")
                length = next(int(h.split(":")[1]) for h in headers if h.lower().startswith("content-length"))
                body = await reader.readexactly(length)
                target = urlsplit(request_line.split(" ")[1])
                query = parse_qs(target.query)
                expected = sign_query("POST", target.path, body, KEY, SECRET, int(query["auth_timestamp"][0]))
                if target.query != expected or orjson.loads(body)["channels"] != ["bench-test"]:
                    problems.append(request_line)
                close = b"Connection: close\r\n" if close_each else b""
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + close + b"\r\n{}")
                await writer.drain()
                if close_each:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0), problems


@pytest.mark.parametrize(("close_each", "connects"), [(False, 4), (True, 40)])
async def test_c_publisher_reports_requests_and_connection_churn(
    publisher: Path, close_each: bool, connects: int
) -> None:
    server, problems = await _serve(close_each)
    port = server.sockets[0].getsockname()[1]
    async with server:
        proc = await asyncio.create_subprocess_exec(
            str(publisher), "127.0.0.1", str(port), "1", KEY, SECRET, "bench-test", "4", "40", "10",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
    report = orjson.loads(out)
    assert (report["sent"], report["ok"], report["failed"]) == (40, 40, 0)
    assert report["connects"] == connects
    assert report["cpu_seconds"] >= 0 and report["p99_us"] > 0
    assert problems == []


def test_every_bench_group_imports_and_quick_sizes_are_smaller() -> None:
    assert {"connect-rate", "http-api", "fanout", "fanout-20k", "scale-50k"} <= GROUPS.keys()
    args = parse_args(["--quick", "--scenarios", "connect-rate,http-api,fanout,fanout-20k,scale-50k"])
    assert args.quick
    assert QUICK.fanout_huge < FULL.fanout_huge
    assert QUICK.connect_rate_connections < FULL.connect_rate_connections
    assert max(QUICK.scale_steps) < max(FULL.scale_steps)
