"""The live debug console: a tap on the node, the page at `{path}/console`, its stream and its cluster relay.

`relay.console.tap` is imported by the node and the webhook sender and imports nothing of relay's; the
rest of the package is wired in by relay/app.py only.
"""
