"""The server's one configuration object, and TF Serving's `models.config` text format.

`ServerConfig` holds every knob of the server (ports, mode, batching, request logging, privacy,
canary weights). Which models to serve comes from TF Serving's own `ModelServerConfig` text format
(`model_config_list { config { name base_path model_version_policy version_labels } }`), so one
file drives both our server and the real `tensorflow_model_server`.
"""
import dataclasses
import os
import re

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving.versions import VersionPolicy

DEFAULT_REST_PORT = 8501
DEFAULT_GRPC_PORT = 8500
DEFAULT_HOST = '127.0.0.1'
DEFAULT_SIGNATURE = 'serving_default'
MODEL_NAME_PATTERN = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.-]{0,127}')
LABEL_PATTERN = re.compile(r'[A-Za-z_][A-Za-z0-9_.-]{0,63}')


class ConfigError(ValueError):
  """A configuration that cannot be served, with a message naming the problem."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """One entry of `model_config_list`."""
  name: str
  base_path: str
  policy: VersionPolicy = VersionPolicy()
  labels: tuple[tuple[str, int], ...] = ()

  @property
  def label_map(self) -> dict[str, int]:
    return dict(self.labels)


def validate_model_name(name: str) -> str:
  """Model names are URL path segments and directory names: letters, digits, `_ . -`, no `..`."""
  if not MODEL_NAME_PATTERN.fullmatch(name or '') or '..' in name:
    raise ConfigError(f'Invalid model name {name!r}: use 1-128 letters, digits, "_", "." or "-", '
                      'starting with a letter or digit, without ".."')
  return name


def resolve_base_path(base_path: str, model_root: str | None) -> str:
  """An absolute base path; relative paths are taken under `model_root`, and with a `model_root`
  set, a base path resolving outside it is refused (no traversal through `..` or symlinks)."""
  if not base_path:
    raise ConfigError('base_path is empty')
  if model_root is None:
    return os.path.abspath(base_path)
  root = os.path.realpath(model_root)
  path = os.path.realpath(os.path.join(root, base_path))
  if path != root and not path.startswith(root + os.sep):
    raise ConfigError(f'base_path {base_path!r} resolves outside the model root {model_root}')
  return path


def models_from_proto(config: model_server_config_pb2.ModelServerConfig,
                      model_root: str | None = None) -> list[ModelConfig]:
  """Validated `ModelConfig`s from a `ModelServerConfig` message."""
  if config.WhichOneof('config') != 'model_config_list':
    raise ConfigError('Only model_config_list is supported (custom_model_config is not)')
  models, names = [], set()
  for entry in config.model_config_list.config:
    name = validate_model_name(entry.name)
    if name in names:
      raise ConfigError(f'Model {name} is configured twice')
    names.add(name)
    if entry.model_platform not in ('', 'tensorflow'):
      raise ConfigError(f'Model {name}: model_platform {entry.model_platform!r} is not supported '
                        '(only "tensorflow")')
    if entry.HasField('logging_config'):
      raise ConfigError(f'Model {name}: logging_config is not supported: open-source TF Serving '
                        'refuses to start with it. Configure request logging on the Loopline '
                        'server instead (--request-log-dir).')
    policy_kind = entry.model_version_policy.WhichOneof('policy_choice')
    try:
      if policy_kind == 'all':
        policy = VersionPolicy('all')
      elif policy_kind == 'specific':
        policy = VersionPolicy('specific',
                               versions=tuple(entry.model_version_policy.specific.versions))
      elif policy_kind == 'latest':
        policy = VersionPolicy('latest', entry.model_version_policy.latest.num_versions or 1)
      else:
        policy = VersionPolicy()
    except ValueError as e:
      raise ConfigError(f'Model {name}: {e}') from e
    for label in entry.version_labels:
      if not LABEL_PATTERN.fullmatch(label):
        raise ConfigError(f'Model {name}: invalid version label {label!r}')
    labels = tuple(sorted((k, int(v)) for k, v in entry.version_labels.items()))
    models.append(
        ModelConfig(name, resolve_base_path(entry.base_path, model_root), policy, labels))
  return models


def parse_model_config_text(text: str) -> model_server_config_pb2.ModelServerConfig:
  """Parse TF Serving's text-format `models.config`."""
  config = model_server_config_pb2.ModelServerConfig()
  try:
    text_format.Parse(text, config)
  except text_format.ParseError as e:
    raise ConfigError(f'models.config is not a valid ModelServerConfig: {e}') from e
  return config


def load_model_config_file(path: str, model_root: str | None = None) -> list[ModelConfig]:
  with open(path, encoding='utf-8') as f:
    return models_from_proto(parse_model_config_text(f.read()), model_root)


def single_model_proto(name: str, base_path: str) -> model_server_config_pb2.ModelServerConfig:
  """The config TF Serving builds from `--model_name` and `--model_base_path`."""
  config = model_server_config_pb2.ModelServerConfig()
  entry = config.model_config_list.config.add()
  entry.name, entry.base_path, entry.model_platform = name, base_path, 'tensorflow'
  return config


@dataclasses.dataclass
class BatchingConfig:
  """Server-side dynamic batching (TF Serving's `--enable_batching` parameters)."""
  enabled: bool = True
  max_batch_size: int = 32
  # 0: a batch starts as soon as a batch thread is free and takes everything queued meanwhile, so
  # batches grow with load without delaying a lone request.
  batch_timeout_micros: int = 0
  num_batch_threads: int = 1
  max_enqueued_batches: int = 64

  def validate(self):
    if self.max_batch_size < 1 or self.num_batch_threads < 1 or self.max_enqueued_batches < 1:
      raise ConfigError('max_batch_size, num_batch_threads and max_enqueued_batches must be >= 1')
    if self.batch_timeout_micros < 0:
      raise ConfigError('batch_timeout_micros must be >= 0')


@dataclasses.dataclass
class PrivacyConfig:
  """What happens to tf.Example features before a logged request reaches disk."""
  redact_features: tuple[str, ...] = ()
  hash_features: tuple[str, ...] = ()
  hash_key: bytes = b''
  example_input_key: str = 'examples'

  def validate(self):
    both = set(self.redact_features) & set(self.hash_features)
    if both:
      raise ConfigError(f'Features both redacted and hashed: {sorted(both)}')
    if self.hash_features and len(self.hash_key) < 16:
      raise ConfigError('Hashing features needs a secret key of at least 16 bytes '
                        '(--log-hash-key-file or $LOOPLINE_LOG_HASH_KEY)')


@dataclasses.dataclass
class RequestLogConfig:
  """Sampled PredictionLog files: where, how often, rotation and retention."""
  directory: str | None = None  # None: request logging off.
  sampling_rate: float = 1.0
  max_file_bytes: int = 64 * 2**20
  max_file_age_seconds: float = 300.0
  buffer_records: int = 10_000
  flush_interval_seconds: float = 1.0
  retention_max_age_seconds: float = 7 * 24 * 3600.0
  retention_max_total_bytes: int = 2 * 2**30

  def validate(self):
    if not 0.0 <= self.sampling_rate <= 1.0:
      raise ConfigError(f'Log sampling rate must be within [0, 1], got {self.sampling_rate}')
    if self.max_file_bytes < 1 or self.buffer_records < 1 or self.max_file_age_seconds <= 0:
      raise ConfigError('max_file_bytes, buffer_records and max_file_age_seconds must be positive')
    if self.retention_max_age_seconds <= 0 or self.retention_max_total_bytes <= 0:
      raise ConfigError('Retention limits must be positive')


@dataclasses.dataclass
class ServerConfig:
  """Everything the server needs; built by the CLI or directly by tests and the bench."""
  mode: str = 'embedded'  # 'embedded' or 'gateway'.
  model_config: model_server_config_pb2.ModelServerConfig | None = None
  model_config_file: str | None = None
  model_config_file_poll_wait_seconds: float = 0.0
  file_system_poll_wait_seconds: float = 1.0
  model_root: str | None = None  # When set, every base_path must resolve inside it.
  upstream_grpc: str | None = None  # Gateway mode: 'host:port' of TF Serving's gRPC API.
  rest_host: str = DEFAULT_HOST
  rest_port: int = DEFAULT_REST_PORT  # 0 picks a free port.
  grpc_host: str = DEFAULT_HOST
  grpc_port: int = DEFAULT_GRPC_PORT
  max_body_bytes: int = 32 * 2**20
  canary_weights: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
  sticky_header: str | None = None  # e.g. 'X-Routing-Key'; requests with one stick to a label.
  routing_seed: int | None = None  # Reproducible routing: see serving.routing.CanaryRouter.
  batching: BatchingConfig = dataclasses.field(default_factory=BatchingConfig)
  request_log: RequestLogConfig = dataclasses.field(default_factory=RequestLogConfig)
  privacy: PrivacyConfig = dataclasses.field(default_factory=PrivacyConfig)
  shutdown_grace_seconds: float = 10.0
  # Server processes sharing the ports (`serving.workers`); each worker sees the pool's size.
  workers: int = 1

  def validate(self):
    if self.mode not in ('embedded', 'gateway'):
      raise ConfigError(f'mode must be embedded or gateway, got {self.mode!r}')
    if self.mode == 'gateway' and not self.upstream_grpc:
      raise ConfigError('gateway mode needs the upstream TF Serving gRPC address (--upstream)')
    if self.mode == 'embedded' and self.model_config is None and not self.model_config_file:
      raise ConfigError('No models to serve: give a model config file or a model base path')
    if self.workers < 1:
      raise ConfigError(f'workers must be at least 1, got {self.workers}')
    if self.workers > 1 and self.mode != 'embedded':
      raise ConfigError('--workers applies to the embedded mode only (a gateway forwards to TF '
                        'Serving, which uses every core itself)')
    if self.max_body_bytes < 1024:
      raise ConfigError('max_body_bytes must be at least 1024')
    self.batching.validate()
    self.request_log.validate()
    self.privacy.validate()

  def initial_models(self) -> list[ModelConfig]:
    """The models of the config file, else of `model_config`, validated."""
    if self.model_config_file:
      return load_model_config_file(self.model_config_file, self.model_root)
    if self.model_config is not None:
      return models_from_proto(self.model_config, self.model_root)
    return []
