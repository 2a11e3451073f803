"""Subscribe to a public channel on a running relay and print every event.

    .venv/bin/python examples/listen.py [ws://127.0.0.1:8080/app/relay-key] [news]
"""

from __future__ import annotations

import asyncio
import json
import sys

import websockets


async def listen(url: str, channel: str) -> None:
    async with websockets.connect(f"{url}?protocol=7&client=python&version=0.1") as socket:
        established = json.loads(await socket.recv())
        print("connected:", json.loads(established["data"])["socket_id"])
        await socket.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))
        async for raw in socket:
            frame = json.loads(raw)
            if frame["event"] == "pusher:ping":
                await socket.send(json.dumps({"event": "pusher:pong", "data": {}}))
                continue
            print(frame["event"], frame.get("channel", ""), frame.get("data", ""))


if __name__ == "__main__":
    arguments = sys.argv[1:]
    asyncio.run(
        listen(
            arguments[0] if arguments else "ws://127.0.0.1:8080/app/relay-key",
            arguments[1] if len(arguments) > 1 else "news",
        )
    )
