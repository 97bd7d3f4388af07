"""The concrete objects a running gateway serves requests with (built in ``wiring.py``)."""

from __future__ import annotations

from dataclasses import dataclass

from execbridge.config import Settings
from execbridge.engine.loop import Engine
from execbridge.sandbox.base import ContainerService


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    engine: Engine
    containers: ContainerService
