"""One open relay debug console, for the `relay-console` server: reads `{path}/console/stream` as fast
as it comes (as a browser tab that keeps up would) until SIGTERM, then prints what it received.

    python -m bench.console_viewer HOST PORT APP_ID TOKEN
"""

import http.client
import signal
import sys
import time

import orjson


def main() -> int:
    host, port, app_id, token = sys.argv[1:5]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("GET", f"/console/stream?app_id={app_id}", headers={"Authorization": f"Bearer {token}"})
    response = connection.getresponse()
    if response.status != 200:
        print(f"console stream answered {response.status}: {response.read()[:200]!r}", flush=True)
        return 1
    print("console viewer: stream open", flush=True)  # open_console() waits for this line
    started = time.monotonic()
    received = log_lines = dropped = 0
    pending = b""
    try:
        while chunk := response.read1(65536):
            received += len(chunk)
            pending += chunk
            *messages, pending = pending.split(b"\n\n")
            for message in messages:
                event, _, data = message.partition(b"\ndata: ")
                if event == b"event: log":
                    log_lines += len(orjson.loads(data))
                elif event == b"event: status":
                    dropped = orjson.loads(data).get("dropped", 0)
    finally:
        seconds = time.monotonic() - started
        print(
            f"console viewer: {seconds:.1f}s open, {received} bytes, {log_lines} log lines, {dropped} dropped by relay",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
