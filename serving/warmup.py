"""SavedModel warm-up: TF Serving's `assets.extra/tf_serving_warmup_requests`, written and replayed.

TensorFlow optimizes and allocates on a function's first calls, so the first requests a newly
loaded version answers are slow. TF Serving replays sample requests stored inside the SavedModel
before the version becomes AVAILABLE (`tensorflow_serving/servables/tensorflow/
saved_model_warmup.cc` and `saved_model_warmup_util.cc`): a TFRecord file of
`tensorflow.serving.PredictionLog`s, each holding a Predict, Classify, Regress or MultiInference
request. The AtomicPusher writes one into every version it pushes (from the eval split, with TFX's
InfraValidator request builder: the file its `make_warmup` writes), so the real TF Serving warms up
from the same file. `Servable` calls `replay` at the end of its load, in the manager's loading
thread: the version is AVAILABLE only afterwards, and a worker process listens only once its
versions are loaded.

As in TF Serving:
- no file: nothing to replay, the version loads as before;
- a file that is not whole TFRecords (corrupt or truncated): DATA_LOSS, the load fails;
- a record that is not a PredictionLog, or more than MAX_RECORDS records: INVALID_ARGUMENT, the
  load fails;
- a `session_run_log`: UNIMPLEMENTED; a request the model rejects: its error; the load fails.
A failed load leaves the version END with that error while the versions already serving keep
serving: TF Serving's loader returns the warm-up's status (`saved_model_bundle_source_adapter.cc`),
it never logs and goes on. Each record is replayed once (TF Serving's default
`num_request_iterations`), through the signature's `CallTimer`: the batcher's fast path knows the
model's call time before the first request.
"""
import logging
import os
import time

from google.protobuf.message import DecodeError
from tensorflow_serving.apis import prediction_log_pb2

from serving import log_files
from serving import protos
from serving.config import DEFAULT_SIGNATURE
from serving.errors import Code, ServingError, invalid_argument

log = logging.getLogger('serving.warmup')
ASSETS_EXTRA = 'assets.extra'
WARMUP_FILE = 'tf_serving_warmup_requests'
MAX_RECORDS = 1000  # TF Serving's WarmupConsts::kMaxNumRecords.


def warmup_file(version_dir: str) -> str:
  return os.path.join(version_dir, ASSETS_EXTRA, WARMUP_FILE)


def prediction_log(request) -> prediction_log_pb2.PredictionLog:
  """The PredictionLog holding a Predict, Classify, Regress or MultiInference request."""
  field = {'PredictRequest': 'predict_log', 'ClassificationRequest': 'classify_log',
           'RegressionRequest': 'regress_log',
           'MultiInferenceRequest': 'multi_inference_log'}[request.DESCRIPTOR.name]
  entry = prediction_log_pb2.PredictionLog()
  getattr(entry, field).request.CopyFrom(request)
  return entry


def write_warmup_file(version_dir: str, logs) -> str:
  """`<version_dir>/assets.extra/tf_serving_warmup_requests` holding `logs` (on any file system
  TensorFlow writes to, as a pushed version may be remote); its path."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  path = warmup_file(version_dir)
  tf.io.gfile.makedirs(os.path.dirname(path))
  with tf.io.gfile.GFile(path, 'wb') as f:
    for entry in logs:
      f.write(log_files.frame_record(entry.SerializeToString()))
  return path


def read_warmup_file(path: str) -> list[prediction_log_pb2.PredictionLog]:
  """The PredictionLogs of a warm-up file; ServingError with TF Serving's code if it is bad."""
  result = log_files.read_records(path)
  if result.truncated:
    raise ServingError(Code.DATA_LOSS, f'Corrupted or truncated record at byte '
                       f'{result.complete_bytes} of {path}. Please verify your warmup data is in '
                       'TFRecord format.')
  if len(result.records) > MAX_RECORDS:
    raise invalid_argument(f'Number of warmup records exceeds the maximum ({MAX_RECORDS}) at '
                           f'{path}')
  logs = []
  for index, record in enumerate(result.records):
    try:
      logs.append(prediction_log_pb2.PredictionLog.FromString(record))
    except DecodeError:
      raise invalid_argument(f'Failed to parse warmup record {index} from {path}') from None
  return logs


def _call(signature, inputs: dict):
  rows = next(iter(inputs.values())).shape[:1]
  signature.timer.timed(signature.run, inputs, rows[0] if rows else 1)


def _run_examples(servable, signature_name: str, kind: str, request_input):
  signature, alias = servable.example_signature(signature_name or DEFAULT_SIGNATURE, kind)
  _call(signature, {alias: protos.string_array(protos.examples_from_input(request_input))})


def _run(servable, entry: prediction_log_pb2.PredictionLog):
  """One warm-up request, as TF Serving's RunWarmupRequest runs it (answers discarded)."""
  kind = entry.WhichOneof('log_type')
  if kind == 'predict_log':
    request = entry.predict_log.request
    signature = servable.signature(request.model_spec.signature_name or DEFAULT_SIGNATURE)
    _call(signature, signature.validate({alias: protos.array_from_tensor(alias, tensor)
                                         for alias, tensor in request.inputs.items()}))
  elif kind == 'classify_log':
    request = entry.classify_log.request
    _run_examples(servable, request.model_spec.signature_name, 'classify', request.input)
  elif kind == 'regress_log':
    request = entry.regress_log.request
    _run_examples(servable, request.model_spec.signature_name, 'regress', request.input)
  elif kind == 'multi_inference_log':
    request = entry.multi_inference_log.request
    for task in request.tasks:
      _run_examples(servable, task.model_spec.signature_name,
                    protos.inference_kind(task.method_name), request.input)
  elif kind is not None:
    raise ServingError(Code.UNIMPLEMENTED, f'Unsupported log_type for warmup: {kind}')


def replay(servable) -> int:
  """Replay the warm-up file of a loaded servable (see the module docstring); the number of
  records replayed (0 without a file). Raises ServingError (the load fails) like TF Serving."""
  path = warmup_file(servable.path)
  if not os.path.isfile(path):
    log.info('No warmup data file found at %s', path)
    return 0
  started = time.perf_counter()
  logs = read_warmup_file(path)
  for index, entry in enumerate(logs):
    try:
      _run(servable, entry)
    except ServingError as e:
      raise ServingError(e.code, f'Warmup request {index} of {path}: {e.message}') from None
  log.info('Finished reading warmup data for model at %s. Number of warmup records read: %d. '
           'Elapsed time (microseconds): %d.', path, len(logs),
           (time.perf_counter() - started) * 1e6)
  return len(logs)
