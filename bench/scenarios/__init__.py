"""The benchmark scenarios, by name, in the order `bench/run` runs them."""
