"""Server-side dynamic batching of concurrent requests (asyncio side; model calls in threads).

Requests for one servable signature queue up; a batch starts when a batch thread is free and
either `max_batch_size` examples are waiting or the oldest has waited `batch_timeout_micros`.
While the model is busy, requests accumulate, so batches grow with load: one model call costs
about the same for 1 or 32 examples. The queue is bounded (`max_enqueued_batches` batches worth of
examples); beyond it, requests fail fast with UNAVAILABLE (HTTP 503), as in TF Serving.

Low-load fast path: with `batch_timeout_micros` 0 (the default), a request of at most
`max_batch_size` rows that finds no batch forming runs the model at once on the event-loop thread,
without the hand-off to a batch thread and without gathering rounds (see `DynamicBatcher.submit`).
Batching resumes by itself as soon as requests meet each other. While the model runs there, the
loop answers nothing else (other connections, health checks, metrics), so the fast path is only
for calls known to be short: every model call is timed (`CallTimer`, shared with the warm-up at
load), and a request takes the fast path only when the signature's calls, scaled to the
request's rows, take less than INLINE_MAX_SECONDS (its typical call: the median of the last few).
A signature never timed (no warm-up, first request), a slow model, or a request of more than
`max_batch_size` rows runs in a batch thread.
"""
import asyncio
import collections
import concurrent.futures
import dataclasses
import threading
import time

import numpy as np

from serving import metrics as metrics_lib
from serving.config import BatchingConfig
from serving.errors import Code, ServingError

IDLE_ITERATIONS = 12
# The longest typical model call (scaled to the request's rows) the fast path runs on the event-loop
# thread: a model call there delays every other connection by its duration.
INLINE_MAX_SECONDS = 0.002
RECENT_CALLS = 5  # The typical call time is the median of this many recent calls.
# Model calls in a row serving one request each before lone requests take the fast path again.
FAST_PATH_AFTER_SINGLE_CALLS = 8
QUEUE_FULL_MESSAGE = 'The batch scheduling queue to which this task was submitted is full'


class CallTimer:
  """How long a model function's calls take, for the fast path: one per signature, shared by the
  warm-up (which fills it before the first request) and the batcher.

  The typical call is the median of the last RECENT_CALLS successful calls (seconds, rows): a
  model that is slow every time is never run inline, while one call of a fast model delayed by
  the machine (a preempted thread) does not close the fast path, and a model that became slow
  closes it within a few calls.
  """

  def __init__(self, inline_max_seconds: float = INLINE_MAX_SECONDS):
    self.calls = 0  # Successful calls.
    self._inline_max_seconds = inline_max_seconds
    self._recent = collections.deque(maxlen=RECENT_CALLS)
    self._typical = None  # (seconds, rows) of the median recent call.
    self._lock = threading.Lock()  # Calls end in batch threads and on the event loop.

  def timed(self, run, inputs: dict, rows: int) -> dict:
    """`run(inputs)`, timed. A call that fails is not recorded: a request rejected early (a parse
    error) says nothing about how long the model takes."""
    started = time.perf_counter()
    outputs = run(inputs)
    seconds = time.perf_counter() - started
    with self._lock:
      self._recent.append((seconds, max(rows, 1)))
      ordered = sorted(self._recent)
      # The lower middle: of two calls, one slow is noise.
      self._typical = ordered[(len(ordered) - 1) // 2]
      self.calls += 1
    return outputs

  def fast_enough(self, rows: int) -> bool:
    """Whether a call of `rows` rows should take less than the inline bound: the typical call's
    time, scaled up (never down) to `rows` (an overestimate: part of a call's time does not grow
    with its rows). False before the first call."""
    typical = self._typical
    if typical is None:
      return False
    seconds, typical_rows = typical
    return seconds * max(1.0, rows / typical_rows) < self._inline_max_seconds


@dataclasses.dataclass
class _Task:
  inputs: dict[str, np.ndarray]
  rows: int
  future: asyncio.Future
  enqueued_at: float


class DynamicBatcher:
  """Batches calls of one `run(inputs) -> outputs` function whose tensors all lead with the batch
  dimension."""

  def __init__(self, run, options: BatchingConfig, executor: concurrent.futures.Executor,
               metrics: metrics_lib.Metrics, timer: CallTimer | None = None):
    """`timer`: the function's call times (the signature's, which the warm-up filled)."""
    self._run = run
    self._options = options
    self._executor = executor
    self._metrics = metrics
    self._timer = timer or CallTimer()
    self._tasks: collections.deque[_Task] = collections.deque()
    self._queued_rows = 0
    self._max_queued_rows = options.max_enqueued_batches * options.max_batch_size
    self._wakeup = asyncio.Event()
    self._free_threads = asyncio.Semaphore(options.num_batch_threads)
    self._running: set[asyncio.Task] = set()
    self._batches_running = 0
    self._arriving = 0  # Requests deciding between the fast path and the queue.
    self._single_calls = FAST_PATH_AFTER_SINGLE_CALLS  # In a row: model calls for one request.
    self._inline_allowed = options.batch_timeout_micros == 0
    self._closing = False
    self._scheduler = asyncio.get_running_loop().create_task(self._schedule())

  async def submit(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Queue one request's inputs and wait for its slice of a batch's outputs."""
    if self._closing:
      raise ServingError(Code.UNAVAILABLE, 'Servable is being unloaded')
    rows = next(iter(inputs.values())).shape[0]
    if (self._inline_allowed and rows <= self._options.max_batch_size and
        self._single_calls >= FAST_PATH_AFTER_SINGLE_CALLS and not self._busy() and
        self._timer.fast_enough(rows)):
      outputs = await self._run_inline_if_alone(inputs, rows)
      if outputs is not None:
        return outputs
    if self._queued_rows + rows > self._max_queued_rows and self._queued_rows > 0:
      raise ServingError(Code.UNAVAILABLE, QUEUE_FULL_MESSAGE)
    future = asyncio.get_running_loop().create_future()
    self._tasks.append(_Task(inputs, rows, future, time.monotonic()))
    self._queued_rows += rows
    self._metrics.queue_depth.inc(rows)
    self._wakeup.set()
    return await future

  def _busy(self) -> bool:
    return bool(self._tasks or self._batches_running)

  async def _run_inline_if_alone(self, inputs: dict[str, np.ndarray], rows: int):
    """The low-load fast path: the model's outputs, computed here on the event-loop thread, when
    the request is alone; None (go and queue) when others arrived with it or a batch is forming.

    One loop iteration lets the requests that became readable with this one reach `submit` too:
    if any did, they queue together and batching takes over. While the model runs here the loop is
    blocked, so what arrives meanwhile finds the next iteration busy and forms a batch. Only after
    FAST_PATH_AFTER_SINGLE_CALLS model calls in a row that served one request each is the fast
    path tried again (`submit`): a loaded server keeps batching even when its requests trickle in
    one by one, as gRPC's poller thread hands them over (when a single batch of one reopened the
    fast path, ~6% of gRPC requests at concurrency 32 ran inline, blocking the loop). Costs one loop iteration; saves the thread hand-off (~0.1-0.2 ms).
    """
    self._arriving += 1
    try:
      await asyncio.sleep(0)
    finally:
      self._arriving -= 1
    if self._arriving or self._busy() or self._closing:
      return None
    self._metrics.batch_size().observe(rows)
    self._metrics.model_calls('inline').inc()
    return self._timer.timed(self._run, inputs, rows)

  async def close(self):
    """Finish everything queued, then stop."""
    self._closing = True
    self._wakeup.set()
    await self._scheduler
    if self._running:
      await asyncio.gather(*self._running, return_exceptions=True)

  async def _schedule(self):
    timeout = self._options.batch_timeout_micros / 1e6
    while True:
      while not self._tasks:
        if self._closing:
          return
        self._wakeup.clear()
        await self._wakeup.wait()
      await self._free_threads.acquire()
      await self._gather_arrived()
      deadline = self._tasks[0].enqueued_at + timeout
      while (self._queued_rows < self._options.max_batch_size and not self._closing and
             time.monotonic() < deadline):
        self._wakeup.clear()
        try:
          await asyncio.wait_for(self._wakeup.wait(), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
          break
      batch = [self._tasks.popleft()]
      rows = batch[0].rows
      while self._tasks and rows + self._tasks[0].rows <= self._options.max_batch_size:
        task = self._tasks.popleft()
        batch.append(task)
        rows += task.rows
      self._queued_rows -= rows
      self._metrics.queue_depth.dec(rows)
      self._batches_running += 1
      running = asyncio.get_running_loop().create_task(self._run_batch(batch, rows))
      self._running.add(running)
      running.add_done_callback(self._running.discard)

  async def _gather_arrived(self):
    """Let requests that have already arrived join the batch before it starts.

    Requests whose bytes are in the sockets, or that are being parsed and decoded, reach the queue
    within a few iterations of the event loop. gRPC requests are handed to the loop by grpc's
    poller thread, which needs the interpreter lock: an idle round also yields it
    (`time.sleep(0)`). Running rounds until IDLE_ITERATIONS in a row add nothing costs a lone
    request tens of microseconds, and under load grows the batch, where a model call costs the same
    for 1 or 32 examples (measured at concurrency 32: REST 16 -> 30 examples a model call; gRPC
    ~5 -> ~20 and +45% throughput from the yield and 12 rounds instead of 3). Waiting for requests
    that have not arrived is `batch_timeout_micros`' job.
    """
    idle = 0
    while (idle < IDLE_ITERATIONS and self._queued_rows < self._options.max_batch_size and
           not self._closing):
      queued = self._queued_rows
      await asyncio.sleep(0)
      if self._queued_rows == queued:
        time.sleep(0)  # Let grpc's poller thread hand over what arrived.
        await asyncio.sleep(0)
      idle = idle + 1 if self._queued_rows == queued else 0

  async def _run_batch(self, batch: list[_Task], rows: int):
    loop = asyncio.get_running_loop()
    try:
      batch = [t for t in batch if not t.future.done()]  # Cancelled by disconnected clients.
      if not batch:
        return
      self._metrics.batch_size().observe(sum(t.rows for t in batch))
      self._metrics.model_calls('batched').inc()
      self._single_calls = self._single_calls + 1 if len(batch) == 1 else 0
      if len(batch) == 1:
        await self._run_alone(batch[0])
        return
      try:
        merged = {alias: np.concatenate([t.inputs[alias] for t in batch])
                  for alias in batch[0].inputs}
        total = sum(t.rows for t in batch)
        outputs = await loop.run_in_executor(self._executor, self._timer.timed, self._run, merged,
                                             total)
        if any(a.ndim == 0 or a.shape[0] != total for a in outputs.values()):
          raise ValueError('outputs do not lead with the batch dimension')
      except Exception:  # pylint: disable=broad-except  # Isolate the request that failed.
        for task in batch:
          await self._run_alone(task)
        return
      offset = 0
      for task in batch:
        if not task.future.done():
          task.future.set_result({a: v[offset:offset + task.rows] for a, v in outputs.items()})
        offset += task.rows
    finally:
      self._batches_running -= 1
      self._free_threads.release()

  async def _run_alone(self, task: _Task):
    try:
      outputs = await asyncio.get_running_loop().run_in_executor(
          self._executor, self._timer.timed, self._run, task.inputs, task.rows)
    except Exception as e:  # pylint: disable=broad-except  # Handed to the waiting request.
      if not task.future.done():
        task.future.set_exception(e)
      return
    if not task.future.done():
      task.future.set_result(outputs)
