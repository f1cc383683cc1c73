"""The runner: buffers, batching, retries, acknowledgements, routing and shutdown."""
