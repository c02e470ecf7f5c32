"""FastAPI scoring service (create_app, routes, hot path)."""
