"""The concrete objects a running gateway serves requests with (built in ``wiring.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from execbridge.api.auth import KeyGate
from execbridge.config import Settings
from execbridge.engine.loop import Engine
from execbridge.files import FileService
from execbridge.sandbox.base import ContainerService
from execbridge.upstream.base import ModelCatalog


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    engine: Engine
    containers: ContainerService
    files: FileService
    models: ModelCatalog | None = None  # GET /v1/models; None: not offered
    key_gate: KeyGate | None = None  # gateway keys required (the gateway holds the upstream credential)
