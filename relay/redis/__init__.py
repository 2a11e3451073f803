"""relay's use of Redis: links, Lua scripts, the node's heartbeat, and the cluster adapter.

Importing this package imports no redis-py: only deployments with Redis load the modules that do.
"""
