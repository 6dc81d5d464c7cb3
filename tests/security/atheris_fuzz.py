"""atheris target: ``python -m tests.security.atheris_fuzz -runs=N`` (a longer run: ``-max_total_time=600``).

Feeds arbitrary bytes to the centre's record decoder with signature checks, and
to the outlet's terminal-event parser. Anything but an ``InvalidEvent`` (which
they turn into reasons) is a crash that atheris reports with the input.
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    import orjson

    from agents.ingest import Source, validate_record
    from app.schema import InvalidEvent, parse_terminal_event
    from tests.security.keys import centre_settings

SETTINGS = centre_settings()
SOURCE = Source("t", 0, 0, "S1")


def one_input(data: bytes) -> None:
    validate_record(data, SOURCE, SETTINGS)
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return
    with contextlib.suppress(InvalidEvent):  # the one error it may raise
        parse_terminal_event(obj)


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
