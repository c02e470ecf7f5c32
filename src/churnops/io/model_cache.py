"""A per-version cache of compiled models under CHURNOPS_HOME, so batch scoring skips MLflow.

A registered model version never changes its files, so its compiled form can be kept: the key
is the registry URI, name, version, run id, creation time and source (a deleted and re-created
model gets new ones) plus this package's version and the cache format. Entries are written
atomically; one that cannot be read is dropped and rebuilt, and a cache that cannot be written
only costs speed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import tempfile
from pathlib import Path

from churnops import __version__
from churnops.core.compiled import CompiledModel
from churnops.io.registry_lookup import VersionRecord

logger = logging.getLogger(__name__)

FORMAT = 2  # 2: FastModel carries the calibration map


class CompiledModelCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, registry_uri: str, record: VersionRecord) -> Path:
        identity = [
            FORMAT,
            __version__,
            registry_uri,
            record.name,
            record.version,
            record.run_id or None,  # REST reports a run-less version as "", SQLite as NULL
            record.created_ms,
            record.source,
        ]
        digest = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:32]
        return self.root / f"{record.name}-v{record.version}-{digest}.pkl"

    def get(self, registry_uri: str, record: VersionRecord) -> CompiledModel | None:
        path = self.path_for(registry_uri, record)
        try:
            with path.open("rb") as handle:
                # bandit B301: our own cache under CHURNOPS_HOME
                compiled = pickle.load(handle)  # nosec B301
        except FileNotFoundError:
            return None
        except Exception as err:  # truncated, or written by an incompatible version: rebuild it
            logger.warning("dropping unreadable compiled model %s: %s", path, err)
            path.unlink(missing_ok=True)
            return None
        if not isinstance(compiled, CompiledModel):
            path.unlink(missing_ok=True)
            return None
        return compiled

    def put(self, registry_uri: str, record: VersionRecord, compiled: CompiledModel) -> Path | None:
        path = self.path_for(registry_uri, record)
        partial: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".partial", delete=False) as handle:
                partial = handle.name
                pickle.dump(compiled, handle, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(partial, path)  # readers see the old file or the whole new one
        except (OSError, pickle.PicklingError) as err:
            if partial is not None:
                Path(partial).unlink(missing_ok=True)
            logger.warning(
                "cannot cache the compiled model in %s (%s): scoring will load it from MLflow", path, err
            )
            return None
        return path
