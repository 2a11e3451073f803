"""Read the repository's Dockerfile into its instructions, so tests can carry out its steps without Docker."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, CMD, ...
    arguments: str  # as written, continuation lines joined


@dataclass(frozen=True, slots=True)
class Healthcheck:
    options: dict[str, str]  # --interval=10s -> {"interval": "10s"}
    command: list[str]  # exec form as is; shell form as ["/bin/sh", "-c", text], as Docker runs it


def read_instructions(path: Path) -> list[Instruction]:
    """Instructions in order; comment lines dropped, lines ending in a backslash joined to the next."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = pending + line
        pending = ""
        keyword, _, arguments = text.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip()))
    return instructions


def command_argv(arguments: str) -> list[str]:
    """CMD / ENTRYPOINT / HEALTHCHECK CMD arguments: JSON exec form, or shell form run by /bin/sh -c."""
    if arguments.startswith("["):
        argv = json.loads(arguments)
        assert isinstance(argv, list) and all(isinstance(part, str) for part in argv), arguments
        return argv
    return ["/bin/sh", "-c", arguments]


def env_values(arguments: str) -> dict[str, str]:
    """ENV NAME=value NAME2="value 2" (the key=value form)."""
    values: dict[str, str] = {}
    for word in shlex.split(arguments):
        name, equals, value = word.partition("=")
        assert equals, f"ENV in the legacy `ENV NAME value` form: {arguments}"
        values[name] = value
    return values


def healthcheck(arguments: str) -> Healthcheck:
    options: dict[str, str] = {}
    rest = arguments
    while rest.startswith("--"):
        option, _, rest = rest.partition(" ")
        name, _, value = option[2:].partition("=")
        options[name] = value
        rest = rest.lstrip()
    keyword, _, command = rest.partition(" ")
    assert keyword.upper() == "CMD", f"HEALTHCHECK without CMD: {arguments}"
    return Healthcheck(options, command_argv(command.strip()))


def seconds(duration: str) -> float:
    """A Docker / compose duration such as 30s, 1m30s or 1m."""
    total = 0.0
    number = ""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0}
    for char in duration:
        if char.isdigit() or char == ".":
            number += char
        else:
            assert char in units and number, f"unsupported duration {duration!r}"
            total += float(number) * units[char]
            number = ""
    assert not number, f"duration without a unit: {duration!r}"
    return total
