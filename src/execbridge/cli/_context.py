"""What the global options hand to every subcommand: how to build the one settings object."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from execbridge.config import Settings, load_settings


@dataclass(frozen=True, slots=True)
class CliContext:
    data_dir: Path | None
    config: Path | None
    log_level: str = "warning"
    log_format: str = "text"

    def settings(self, **overrides: Any) -> Settings:
        """Settings with the global flags and a subcommand's own ``overrides`` (``None`` = not given)."""
        return load_settings(self.config, data_dir=self.data_dir, **overrides)
