"""Fan-out and cluster state: in memory for one process, over Redis for several nodes."""
