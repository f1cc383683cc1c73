"""Alerts evaluated in the process: the rule engine and the webhook notifier (the rules' config
model is :mod:`sluice.config.alerts`)."""
