"""Alerts evaluated in the process: rules (config), their evaluation, and the webhook notifier."""
