"""Where the load goes: one Pusher-protocol server's address and app credentials."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    app_id: str
    key: str
    secret: str

    def as_command(self) -> dict[str, str | int]:
        """The fields a worker command needs to reach this server."""
        return {"host": self.host, "port": self.port, "key": self.key, "secret": self.secret, "app_id": self.app_id}
