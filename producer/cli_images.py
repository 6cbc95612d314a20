"""``genfleet worker images`` and ``genfleet submit images`` (see the images issue)."""

from __future__ import annotations

import click


def register(worker: click.Group, submit: click.Group) -> None:
    """Add the image commands to the ``worker`` and ``submit`` groups."""
