"""The model registry a job works on, made from the settings (tracking URI, artifact root, experiment).

Its own module because the promotion path, the pipeline, experiments and the CLI all open it: it
must sit below every one of them.
"""

from __future__ import annotations

from churnops.io.registry import MlflowRegistry
from churnops.settings import Settings


def registry_for(settings: Settings) -> MlflowRegistry:
    settings.ensure_home()
    return MlflowRegistry(settings.tracking_uri, settings.artifact_root, settings.experiment_name)
