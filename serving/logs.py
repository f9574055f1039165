"""Application logs of the service: one JSON object per line (or plain text for local use), uvicorn's own
loggers included. Nothing here logs a message text, a key or a token: callers pass only what is safe
(the request line's fields are listed in `REQUEST_FIELDS`), and an unexpected exception is logged as its
type and where it was raised, never its message (which may quote the input).
"""

from __future__ import annotations

import json
import logging
import logging.config
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from serving.settings import Settings

# the fields of the one line per request (serving.app.RequestObserver); never a body, header or query
REQUEST_FIELDS = ("request_id", "method", "route", "status", "latency_ms", "model_version", "key")
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", ...extra fields}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out |= {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}
        if record.exc_info and record.exc_info[1] is not None:
            out["error"] = exception_summary(record.exc_info[1])
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`time level logger: message key=value ...` for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={v}" for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_"))
        when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        line = f"{when} {record.levelname.lower():<7} {record.name}: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            line += f" error={exception_summary(record.exc_info[1])}"
        return f"{line} {extra}".rstrip()


def exception_summary(err: BaseException) -> str:
    """`ValueError at serving/model.py:123 in infer`: the type and the innermost frame, not the message."""
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return type(err).__name__
    last = frames[-1]
    parts = Path(last.filename).parts
    where = "/".join(parts[-2:]) if len(parts) >= 2 else last.filename
    return f"{type(err).__name__} at {where}:{last.lineno} in {last.name}"


def configure_logging(settings: Settings) -> dict[str, Any]:
    """Route the root logger and uvicorn's loggers through one formatter; returns the dictConfig (uvicorn's
    `log_config`, so uvicorn does not install its own)."""
    formatter = "json" if settings.log_format == "json" else "text"
    level = settings.log_level.upper()
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {"()": f"{__name__}.JsonFormatter"},
            "text": {"()": f"{__name__}.TextFormatter"},
        },
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": formatter, "stream": "ext://sys.stderr"}
        },
        "root": {"handlers": ["default"], "level": level},
        "loggers": {
            # uvicorn's access log is replaced by serving.app's request line (route template, key name, latency)
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            # libraries that log request URLs or statements at debug level
            "httpx": {"level": "WARNING"},
            "httpcore": {"level": "WARNING"},
            "sqlalchemy": {"level": "WARNING"},
            "asyncio": {"level": "WARNING"},
        },
    }
    logging.config.dictConfig(config)
    return config
