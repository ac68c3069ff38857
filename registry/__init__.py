"""Loopline's model registry over ML Metadata: versions, stages, promotion and rollback, lineage.

Plain functions for other code (`loopline train` calls `stage_pushed_model` after a push):

  from registry import stage_pushed_model, promote, rollback, list_models, describe

Modules: `stages` (the rules, pure), `serving_config` (models.config: render, atomic write, lock),
`store` (the registry's ML Metadata records), `catalog`/`lineage` (reading the pipeline's lineage
through metadata.graph), `checks` (loadability, metrics), `api` (the operations), `report`; the
command line is loopline/models_cli.py.
"""
from registry.api import (Registry, describe, list_models, promote, rollback,
                          stage_pushed_model)
from registry.errors import (ConcurrentChangeError, RefusedError, RegistryError,
                             ServingConfigError, UnknownVersionError, WriteNotAllowedError)
