"""Run the service under uvicorn (uvloop + httptools), one or several workers."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys

from churnops.settings import Settings

logger = logging.getLogger(__name__)


def preflight(settings: Settings) -> str:
    """Fail before uvicorn starts (one clear line, non-zero exit) when there is nothing to serve."""
    from churnops.errors import NotReady
    from churnops.io.registry import CHAMPION, MlflowRegistry

    registry = MlflowRegistry(settings.tracking_uri, settings.artifact_root, settings.experiment_name)
    name = registry.resolve_name(settings.model_name)
    version = registry.alias_version(name, CHAMPION)
    if version is None:
        raise NotReady(f"{name} has no `champion` alias: run `churnops models promote VERSION`")
    logger.info("serving %s v%s (champion)", name, version)
    return version


def run(settings: Settings, host: str, port: int, workers: int) -> None:
    """Serve until SIGTERM/SIGINT; in-flight requests drain before exit (graceful shutdown)."""
    import uvicorn

    settings.check_production()
    preflight(settings)
    metrics_dir = settings.metrics_dir or settings.ensure_home() / "metrics" / f"serve-{port}"
    shutil.rmtree(metrics_dir, ignore_errors=True)  # counters restart with the server
    metrics_dir.mkdir(parents=True, exist_ok=True)
    if settings.metrics_port is not None:
        from churnops.errors import ConfigError
        from churnops.serving.metrics_server import start_metrics_server

        if settings.metrics_port == port:
            raise ConfigError(f"CHURNOPS_METRICS_PORT: {port} is the API's own port; choose another")
        start_metrics_server(host, settings.metrics_port, metrics_dir)
        logger.info("metrics on http://%s:%d/metrics (not on the API port)", host, settings.metrics_port)
    # Workers are separate processes that build their own Settings from the environment.
    os.environ["CHURNOPS_METRICS_DIR"] = str(metrics_dir)
    os.environ["CHURNOPS_WORKERS"] = str(workers)  # each worker's share of a rate limit while Redis is down
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per request path: no OpenMP fights
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    # uvicorn re-raises a captured SIGTERM after its graceful shutdown; a drained stop is a success.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(
        "churnops.serving.app:app_factory",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        access_log=False,  # our own access log is sampled and written off the request path
        timeout_graceful_shutdown=30,
        log_config=None,  # keep the service's own logging (churnops.serving.logs)
        log_level=settings.log_level.lower(),
    )
