"""Watching a running pipeline from inside: rate history, alert evaluation, the admin server's
status, and the service that starts them beside the pipeline."""
