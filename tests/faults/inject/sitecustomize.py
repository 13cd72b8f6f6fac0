"""Fault injection for worker subprocesses: put this folder on PYTHONPATH.

`FEEDWARDEN_FAULT_SLOW_SEEK_S=<seconds>` delays Faust's seek of the stream
partitions to their committed offsets after a rebalance, as a slow broker
round trip would. Faust resumes those partitions just before that seek, so
posts are fetched while it is pending: the window in which, before
`stream/acks.py: hold_flow_until_seek`, the recovery's queue clear dropped them.
"""

import asyncio
import os

_DELAY_S = float(os.environ.get("FEEDWARDEN_FAULT_SLOW_SEEK_S") or 0)

if _DELAY_S > 0:
    from faust.transport.consumer import Consumer

    _perform_seek = Consumer.perform_seek

    async def _slow_perform_seek(self: Consumer) -> None:
        await asyncio.sleep(_DELAY_S)
        await _perform_seek(self)

    Consumer.perform_seek = _slow_perform_seek  # type: ignore[method-assign]
