"""Helpers for the logging tests: isolate the process's logging state, and route every
configured handler to an in-memory stream."""

from __future__ import annotations

import io
import logging
import logging.config
from contextlib import contextmanager


def _loggers():
    return [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]


@contextmanager
def isolated_logging():
    """Whatever the block configures (dictConfig included), every logger, handler list,
    filter, level and logging.lastResort is as before afterwards."""
    loggers = _loggers()
    state = [(lg, lg.level, lg.handlers[:], lg.filters[:], lg.propagate, lg.disabled) for lg in loggers]
    handler_filters = {h: h.filters[:] for lg in loggers for h in lg.handlers}
    handler_map, handler_list = dict(logging._handlers), logging._handlerList[:]
    last_resort = logging.lastResort
    last_resort_filters = last_resort.filters[:] if last_resort else None
    try:
        yield
    finally:
        known = {lg for lg, *_ in state}
        for lg in _loggers():
            if lg not in known:  # created inside the block
                lg.setLevel(logging.NOTSET)
                lg.handlers, lg.filters, lg.propagate, lg.disabled = [], [], True, False
        for lg, level, handlers, filters, propagate, disabled in state:
            lg.setLevel(level)
            lg.handlers, lg.filters, lg.propagate, lg.disabled = handlers, filters, propagate, disabled
        for handler, filters in handler_filters.items():
            handler.filters = filters
        logging._handlers.clear()
        logging._handlers.update(handler_map)
        logging._handlerList[:] = handler_list
        logging.lastResort = last_resort
        if last_resort is not None:
            last_resort.filters = last_resort_filters


def configured_handlers():
    """Every handler on any logger, once."""
    seen = {}
    for lg in _loggers():
        for handler in lg.handlers:
            seen.setdefault(id(handler), handler)
    return list(seen.values())


def capture(config: dict) -> dict:
    """Apply a LOGGING dict (as Django does), point every handler it configured at a StringIO
    and detach every other handler; returns {handler name: stream}. Use inside
    isolated_logging()."""
    logging.config.dictConfig(config)
    streams = {}
    for name, handler in logging._handlers.items():  # dictConfig registers each handler by name
        assert isinstance(handler, logging.StreamHandler), f"{name}: {handler!r} cannot be captured"
        streams[name] = io.StringIO()
        handler.setStream(streams[name])
    # What the config did not make (pytest's capture handlers on non-propagating loggers,
    # leftovers) is detached: the streams above are then all that prints.
    made = set(map(id, logging._handlers.values()))
    for lg in _loggers():
        for handler in lg.handlers[:]:
            if id(handler) not in made and not isinstance(handler, logging.NullHandler):
                lg.removeHandler(handler)
    return streams
