"""How the command line writes its logs: readable text (the default) or one JSON object a line.

JSON lines carry ``time`` (RFC 3339, UTC), ``level``, ``logger``, ``message``, the fields of the request
the line was logged in (``api/request_log.py``: ``request_id``, ``owner``, ``container``, …) and the
traceback as ``exception`` when there is one. The formatter is a few lines over ``logging`` and orjson,
which the gateway already uses; a logging library would add a dependency for that.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from execbridge.api import request_log

LogFormat = Literal["text", "json"]


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(request_log.current())
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure(level: str, log_format: LogFormat) -> None:
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonLines())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
