"""Job state: the model, the Redis store with atomic transitions, and the service that drives jobs."""
