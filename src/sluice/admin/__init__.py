"""The admin HTTP server: metrics, health, readiness, queries and the dashboard."""
