"""The central retail stream processor (Faust).

``faust -A app worker`` looks up ``app.app``; the Faust application is built on
first access (PEP 562 module ``__getattr__``) so that importing the package does
no work and reads no environment.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "app":
        from app.faust_app import get_app

        return get_app()
    raise AttributeError(name)
