"""relay's benchmark suite: a load generator for any Pusher-protocol server."""
