"""The Pusher protocol without I/O: frames in, actions out."""
