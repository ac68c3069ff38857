"""Prometheus metrics in text exposition format, with TF Serving's names and buckets.

TF Serving: `:tensorflow:serving:request_count{model_name,status}` and
`:tensorflow:serving:request_latency{model_name,API,entrypoint}` (microseconds, buckets 10*1.8^k,
successful requests only). Ours: batch sizes, batch queue depth, request log records written and
dropped, loaded versions.
"""
import bisect
import threading

REQUEST_COUNT = ':tensorflow:serving:request_count'
REQUEST_LATENCY = ':tensorflow:serving:request_latency'
LATENCY_BUCKETS_MICROS = tuple(10 * 1.8**k for k in range(33))
BATCH_SIZE = 'loopline_serving_batch_size'
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
MODEL_CALLS = 'loopline_serving_model_calls'
QUEUE_DEPTH = 'loopline_serving_batch_queue_depth'
LOG_WRITTEN = 'loopline_serving_request_log_records_written'
LOG_DROPPED = 'loopline_serving_request_log_records_dropped'
LOG_FILES = 'loopline_serving_request_log_files_finalized'
ROUTED = 'loopline_serving_canary_routed_requests'

_HELP = {
    REQUEST_COUNT: ('counter', 'Total number of requests, by model and status.'),
    REQUEST_LATENCY: ('histogram', 'Latency of successful requests in microseconds.'),
    BATCH_SIZE: ('histogram', 'Examples per model call made by the batcher.'),
    MODEL_CALLS: ('counter', 'Model calls by the batcher, by path: "inline" (the low-load fast '
                  'path, on the event-loop thread) or "batched" (a batch thread).'),
    QUEUE_DEPTH: ('gauge', 'Examples waiting in the batch queues.'),
    LOG_WRITTEN: ('counter', 'PredictionLog records written to disk.'),
    LOG_DROPPED: ('counter', 'PredictionLog records dropped (buffer full or write error).'),
    LOG_FILES: ('counter', 'Request log files finalized (renamed to their final name).'),
    ROUTED: ('counter', 'Requests routed to a version label by the canary weights.'),
}


def _escape(value: str) -> str:
  return str(value).replace('\\', r'\\').replace('\n', r'\n').replace('"', r'\"')


def _labels_text(labels: tuple) -> str:
  if not labels:
    return ''
  return '{' + ','.join(f'{k}="{_escape(v)}"' for k, v in labels) + '}'


def _number(value: float) -> str:
  return repr(float(value)) if value != int(value) else str(int(value))


class _Histogram:

  def __init__(self, buckets):
    self.buckets = buckets
    self.counts = [0] * len(buckets)
    self.total = 0
    self.sum = 0.0

  def observe(self, value: float):
    self.total += 1
    self.sum += value
    i = bisect.bisect_left(self.buckets, value)   # the first bound >= value
    if i < len(self.buckets):
      self.counts[i] += 1


class Metrics:
  """A tiny thread-safe registry: counters, gauges and histograms keyed by (name, labels)."""

  def __init__(self):
    self._lock = threading.Lock()
    self._values: dict[tuple, float] = {}
    self._histograms: dict[tuple, _Histogram] = {}
    self._gauges: dict[str, object] = {}

  def gauge(self, name: str, read) -> None:
    """A gauge read (`read()`, no labels) when the metrics are rendered, not on every change."""
    with self._lock:
      self._gauges[name] = read

  def inc(self, name: str, amount: float = 1, **labels):
    key = (name, tuple(sorted(labels.items())))
    with self._lock:
      self._values[key] = self._values.get(key, 0) + amount

  def set(self, name: str, value: float, **labels):
    with self._lock:
      self._values[(name, tuple(sorted(labels.items())))] = value

  def observe(self, name: str, value: float, buckets=LATENCY_BUCKETS_MICROS, **labels):
    key = (name, tuple(sorted(labels.items())))
    with self._lock:
      histogram = self._histograms.get(key)
      if histogram is None:
        histogram = self._histograms[key] = _Histogram(buckets)
      histogram.observe(value)

  def value(self, name: str, **labels) -> float:
    with self._lock:
      return self._values.get((name, tuple(sorted(labels.items()))), 0)

  def snapshot(self) -> tuple[dict, dict]:
    """Plain values (gauges read now): ({(name, labels): value}, {(name, labels): (buckets,
    counts, count, sum)}), what `render` shows; picklable, and summable with `merge`."""
    with self._lock:
      gauges = list(self._gauges.items())
    values = {(name, ()): read() for name, read in gauges}
    with self._lock:
      values.update(self._values)
      histograms = {k: (h.buckets, list(h.counts), h.total, h.sum)
                    for k, h in self._histograms.items()}
    return values, histograms

  def render(self) -> str:
    """The Prometheus text format (version 0.0.4)."""
    return render_snapshot(self.snapshot())


def merge(snapshots) -> tuple[dict, dict]:
  """The sum of several `Metrics.snapshot()`s (the processes of a worker pool)."""
  values, histograms = {}, {}
  for snapshot_values, snapshot_histograms in snapshots:
    for key, value in snapshot_values.items():
      values[key] = values.get(key, 0) + value
    for key, (buckets, counts, total, total_sum) in snapshot_histograms.items():
      if key in histograms:
        _, summed, summed_total, summed_sum = histograms[key]
        counts = [a + b for a, b in zip(summed, counts)]
        total, total_sum = total + summed_total, total_sum + summed_sum
      histograms[key] = (buckets, counts, total, total_sum)
  return values, histograms


def render_snapshot(snapshot: tuple[dict, dict]) -> str:
  """A snapshot in the Prometheus text format (version 0.0.4)."""
  values, histograms = snapshot
  lines, announced = [], set()

  def announce(name):
    if name not in announced:
      announced.add(name)
      kind, text = _HELP.get(name, ('untyped', name))
      lines.append(f'# HELP {name} {text}')
      lines.append(f'# TYPE {name} {kind}')

  for (name, labels), value in sorted(values.items()):
    announce(name)
    lines.append(f'{name}{_labels_text(labels)} {_number(value)}')
  for (name, labels), (buckets, counts, total, total_sum) in sorted(histograms.items(),
                                                                    key=lambda item: item[0]):
    announce(name)
    cumulative = 0
    for bound, count in zip(buckets, counts):
      cumulative += count
      lines.append(f'{name}_bucket{_labels_text(labels + (("le", _number(bound)),))} '
                   f'{cumulative}')
    lines.append(f'{name}_bucket{_labels_text(labels + (("le", "+Inf"),))} {total}')
    lines.append(f'{name}_sum{_labels_text(labels)} {_number(total_sum)}')
    lines.append(f'{name}_count{_labels_text(labels)} {total}')
  return '\n'.join(lines) + '\n'
