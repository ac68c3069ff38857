"""The server's Prometheus metrics, kept by `prometheus_client`, with TF Serving's names.

TF Serving: `:tensorflow:serving:request_count{model_name,status}` and
`:tensorflow:serving:request_latency{model_name,API,entrypoint}` (microseconds, buckets 10*1.8^k,
successful requests only). Ours: batch sizes, model calls by path, batch queue depth, request log
records written and dropped, log files finalized, canary routing.

- **One process** (`Metrics()`): the library's in-memory values, in one registry.
- **A worker pool** (`Metrics(multiprocess=True)`, `serving.workers`): the library's multiprocess
  mode. Every process of the pool (the supervisor and each worker) writes its values to memory-
  mapped files in `$PROMETHEUS_MULTIPROC_DIR` (one directory per pool, made empty by the
  supervisor when it starts), and a scrape of any worker sums every process's files
  (`prometheus_client.multiprocess.MultiProcessCollector`): the pool's exact totals at once. A
  dead worker's counters stay in the sum (its files stay); its queue-depth gauge (`livesum`)
  leaves it when the supervisor marks it dead (`prometheus_client.multiprocess.mark_process_dead`,
  as the library's documentation asks).

prometheus_client chooses where values live (memory or files) when it is first imported, from
`PROMETHEUS_MULTIPROC_DIR`, so this module imports it only when `Metrics` is made: the supervisor
sets the variable first (`serving.workers`).

Counters keep TF Serving's names. The library exposes every counter with a `_total` suffix
(`:tensorflow:serving:request_count_total`; OpenMetrics requires it, and neither `Counter` nor
`CounterMetricFamily` can leave it out), while TF Serving, its dashboards and this server until now
name the series `:tensorflow:serving:request_count`. So the scrape goes through one custom
collector (`_CountersByTheirNames`, the library's documented way to expose metrics it does not
make): each counter family is re-exposed under its own name, as an untyped family (`# TYPE ...
untyped`, where TF Serving writes `counter`: the library writes `counter` only with `_total`).
PromQL (rate, increase) treats both alike. Names starting with ':' are valid for the library
(`[a-zA-Z_:][a-zA-Z0-9_:]*`). Numbers are written the library's way (`2.0`, `le="10.0"`).
"""
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
MULTIPROCESS_DIR_VARIABLE = 'PROMETHEUS_MULTIPROC_DIR'


class _Children:
  """`metric.labels(*values)` memoized: one dict lookup per use instead of the library's label
  checks (a few µs on every request); `()` for a metric without labels."""

  def __init__(self, metric):
    self.metric = metric
    self._children = {(): metric}

  def __call__(self, *values):
    child = self._children.get(values)
    if child is None:
      child = self._children[values] = self.metric.labels(*values)
    return child


class _CountersByTheirNames:
  """A collector re-exposing its source's counters under their own names (see the module
  docstring); other families pass unchanged."""

  def __init__(self, source):
    self._source = source

  def collect(self):
    from prometheus_client.core import UnknownMetricFamily  # pylint: disable=import-outside-toplevel
    for family in self._source.collect():
      if family.type != 'counter':
        yield family
        continue
      totals = [s for s in family.samples if s.name == family.name + '_total']
      names = sorted({name for s in totals for name in s.labels})
      renamed = UnknownMetricFamily(family.name, family.documentation, labels=names)
      for sample in totals:
        renamed.add_metric([sample.labels[name] for name in names], sample.value)
      yield renamed


class Metrics:
  """Every metric of one server process (see the module docstring). Hot paths use the labelled
  children: `metrics.request_count(model_name, status).inc()`."""

  def __init__(self, multiprocess: bool = False):
    """`multiprocess`: a process of a worker pool; `$PROMETHEUS_MULTIPROC_DIR` must have been set
    before prometheus_client was first imported in this process."""
    # pylint: disable=import-outside-toplevel
    import prometheus_client
    from prometheus_client import multiprocess as multiprocess_lib
    from prometheus_client import values
    if multiprocess and values.ValueClass is values.MutexValue:
      raise RuntimeError(f'prometheus_client was imported before ${MULTIPROCESS_DIR_VARIABLE} was '
                         'set: a worker pool cannot share its metrics')
    prometheus_client.disable_created_metrics()  # TF Serving has no `_created` series.
    source = None if multiprocess else prometheus_client.CollectorRegistry(auto_describe=False)

    def counter(name, text, *labels):
      return _Children(prometheus_client.Counter(name, text, labels, registry=source))

    def histogram(name, text, buckets, *labels):
      return _Children(prometheus_client.Histogram(name, text, labels, buckets=buckets,
                                                   registry=source))

    self.request_count = counter(REQUEST_COUNT, 'Total number of requests, by model and status.',
                                 'model_name', 'status')
    self.request_latency = histogram(REQUEST_LATENCY,
                                     'Latency of successful requests in microseconds.',
                                     LATENCY_BUCKETS_MICROS, 'model_name', 'API', 'entrypoint')
    self.batch_size = histogram(BATCH_SIZE, 'Examples per model call made by the batcher.',
                                BATCH_SIZE_BUCKETS)
    self.model_calls = counter(MODEL_CALLS, 'Model calls by the batcher, by path: "inline" (the '
                               'low-load fast path, on the event-loop thread) or "batched" (a '
                               'batch thread).', 'path')
    self.queue_depth = prometheus_client.Gauge(QUEUE_DEPTH, 'Examples waiting in the batch queues.',
                                               registry=source, multiprocess_mode='livesum')
    self.log_written = counter(LOG_WRITTEN, 'PredictionLog records written to disk.')
    self.log_dropped = counter(LOG_DROPPED, 'PredictionLog records dropped (buffer full or write '
                               'error).', 'reason')
    self.log_files = counter(LOG_FILES, 'Request log files finalized (renamed to their final '
                             'name).')
    self.routed = counter(ROUTED, 'Requests routed to a version label by the canary weights.',
                          'model_name', 'label')
    if multiprocess:
      source = multiprocess_lib.MultiProcessCollector(None)
    self._exposed = prometheus_client.CollectorRegistry(auto_describe=False)
    self._exposed.register(_CountersByTheirNames(source))
    self._generate = prometheus_client.generate_latest

  def render(self) -> str:
    """The Prometheus text format (version 0.0.4): in a pool, the sums over every process."""
    return self._generate(self._exposed).decode('utf-8')

  def value(self, name: str, **labels) -> float:
    """One series' value as a scrape shows it (0 when absent); slow: for tests and tools."""
    return self._exposed.get_sample_value(name, labels) or 0.0
