"""Run a server (or a pool of them) until SIGTERM or SIGINT, then stop it: `loopline serve`'s
main loop for one process (`serving.server`) and for the worker pool's supervisor
(`serving.workers`). No TensorFlow here: the supervisor does not load it."""
import asyncio
import signal

import uvloop


def run_until_signal(make, announce, shutting_down: str) -> None:
  """`make()` (called on the event loop) gives an object with `start()`, `describe()` and
  `stop()`; it is started, described, and stopped at the first SIGTERM or SIGINT."""

  async def main():
    service = make()
    await service.start()
    announce(service.describe())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
      loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    announce(shutting_down)
    await service.stop()
    announce('Stopped.')

  uvloop.run(main())
