"""Watching a running pipeline from inside, all in one place.

``service`` starts the rest beside the pipeline: ``history`` (per-second and per-minute counter
history), ``alerts/`` (rule evaluation and the webhook notifier; the rules' config model is
:mod:`sluice.config.alerts`), ``health`` (the event-loop watchdog), and the admin HTTP server
(``server``, guarded by ``auth``, answering ``/api/status`` from ``status`` and serving the files in
``dashboard/``).
"""
