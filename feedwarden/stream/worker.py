"""Run the moderation worker in this process: topics, then the Faust worker."""

from __future__ import annotations

import asyncio
import sys

import faust

from feedwarden.stream.app import create_app
from feedwarden.stream.broker import create_topics
from feedwarden.stream.loop import loop_topics
from feedwarden.stream.settings import Settings


async def ensure_topics(settings: Settings) -> None:
    """Create the worker's topics if missing (Tansu does not auto-create them reliably)."""
    wanted = dict.fromkeys(settings.topics.all(), settings.partitions) | loop_topics(settings)
    await create_topics(settings.bootstrap, wanted, **settings.security.client_options())


def run_worker(settings: Settings, *, loglevel: str = "info") -> None:
    """Block serving posts until SIGINT/SIGTERM; Faust's banner stays off."""
    app = create_app(settings)
    asyncio.run(ensure_topics(settings))
    print(f"feedwarden worker: group {settings.group_id}, topic {settings.topics.posts} "
          f"on {settings.bootstrap}, metrics on port {settings.web_port}", file=sys.stderr, flush=True)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.spinner = None  # the startup spinner writes terminal escapes even when quiet
    worker.execute_from_commandline()
