"""The ASGI app: webhooks, Slack interactions, dashboard, health and metrics."""
