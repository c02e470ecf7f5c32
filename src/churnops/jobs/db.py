"""Database jobs: bring the SQL stores' schema to the newest Alembic revision."""

from __future__ import annotations

import logging

from churnops.io import offline_store
from churnops.settings import Settings, mask_url

logger = logging.getLogger(__name__)


def upgrade(settings: Settings) -> str:
    """Run every pending migration on the configured database; returns the revision it is now at."""
    url = settings.offline_store_url
    revision = offline_store.upgrade(url)
    logger.info("database %s at revision %s", mask_url(url), revision)
    return revision
