from tests.support.fixtures import redis_process, relay_factory  # noqa: F401  (fixtures by name)
