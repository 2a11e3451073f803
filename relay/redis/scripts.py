"""Lua scripts under relay/redis/lua/<group>/, loaded one way for every user of Redis.

A group's `common.lua`, when it has one, is prepended to each of its scripts: one definition of the
group's key layout. A script's `#!lua` line (its flags) stays its first line. Scripts run by EVALSHA and
fall back to EVAL when Redis lost its script cache.
"""

from __future__ import annotations

import hashlib
import importlib.resources
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from redis.exceptions import NoScriptError

from relay.redis.link import Arg, RedisClient

PRELUDE: Final = "common.lua"


@dataclass(frozen=True, slots=True)
class LuaScript:
    name: str
    source: str
    sha: str

    async def run(self, client: RedisClient, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()) -> Any:
        """Run on a redis-py client (callers that hold a PipelinedLink queue EVALSHA themselves)."""
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)


def load_scripts(group: str) -> dict[str, LuaScript]:
    """Every script of relay/redis/lua/<group>/, by file name without `.lua`."""
    folder = importlib.resources.files("relay.redis").joinpath("lua").joinpath(group)
    prelude = folder.joinpath(PRELUDE)
    head = prelude.read_text() + "\n" if prelude.is_file() else ""
    scripts: dict[str, LuaScript] = {}
    for entry in sorted(folder.iterdir(), key=lambda entry: entry.name):
        if not entry.name.endswith(".lua") or entry.name == PRELUDE:
            continue
        text = entry.read_text()
        shebang = ""
        if text.startswith("#!"):
            shebang, _, text = text.partition("\n")
            shebang += "\n"
        source = shebang + head + text
        name = entry.name.removesuffix(".lua")
        scripts[name] = LuaScript(name, source, hashlib.sha1(source.encode()).hexdigest())
    return scripts
