"""The one configuration object of Loopline's training pipeline.

Everything a run depends on lives here: names, paths (all under one home directory), the span
range, tuning, training budget, blessing thresholds, the data gate's severity policy, Beam
arguments and the ML Metadata connection. `PipelineConfig.quick()` is the smoke-run variant.
No TFX import: the CLI, tests and notebooks build configs without loading TensorFlow.
"""
import dataclasses
import os
from typing import List, Optional, Tuple

from components.data_gate import policy as policy_lib
from components.drift_detector import policy as drift_policy_lib
from core import home as home_lib
from core import spans
from metadata.connection import MySQLConnection

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ML Metadata on MySQL for the commands that read a home (the registry's, the notebooks').
MLMD_URL_ENV = 'LOOPLINE_MLMD_URL'

DEFAULT_BEAM_ARGS = ('--direct_running_mode=multi_processing', '--direct_num_workers=0')
# The smoke run's few thousand rows: every Beam stage in this process. Worker processes (each
# imports TensorFlow) cost more than their parallelism saves there: a quick training run takes
# ~68 s instead of ~100 s on 2 cores (ExampleGen 3 s vs 12 s, Transform 24 s vs 34 s).
IN_MEMORY_BEAM_ARGS = ('--direct_running_mode=in_memory',)


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """Configuration of the training pipeline. Paths are absolute after construction."""
  home: str
  pipeline_name: str = 'loopline-training'
  model_name: str = home_lib.MODEL_NAME
  data_root: str = os.path.join(REPO_ROOT, spans.SPANS_DIR)
  span_pattern: str = spans.SPAN_PATTERN
  schema_path: str = os.path.join(REPO_ROOT, 'schema', 'schema.pbtxt')
  first_span: int = spans.TRAINING_SPANS[0]
  last_span: int = spans.TRAINING_SPANS[1]
  eval_hash_buckets: Tuple[int, int] = (4, 1)      # train : eval
  enable_tuning: bool = True
  max_trials: int = 6                              # alternating families (models/model.py)
  tuner_train_steps: int = 600
  train_steps: int = 2000                          # the network's; the trees stop on their own
  # Blessing thresholds, from the model's measured figures (README, "Model quality"): its AUC on
  # the eval split less three standard errors of an AUC on that split's size; its expected
  # calibration error below 0.02.
  min_auc: float = 0.93                           # absolute blessing threshold
  max_auc_drop: float = 0.01                       # allowed AUC drop against the baseline
  max_ece: float = 0.02                            # blessing: expected calibration error below
  seed: int = 42                                   # the search's and the Trainer's random seed
  severity_policy: policy_lib.SeverityPolicy = dataclasses.field(
      default_factory=policy_lib.SeverityPolicy)
  beam_pipeline_args: Tuple[str, ...] = DEFAULT_BEAM_ARGS
  mysql: Optional[MySQLConnection] = None          # None: SQLite under the home directory
  # ML Metadata as the pipeline's own tasks reach it at run time (the baseline resolver of the
  # cluster pipelines: the cluster's gRPC service); None: the store above.
  metadata_service_url: Optional[str] = None
  enable_cache: bool = True
  # Monitoring (pipeline/monitoring_pipeline.py): realized AUC on labelled serving traffic below
  # this triggers retraining, like a critical drift verdict. From the model's AUC on the future
  # spans 6-8 less three standard errors of an AUC on a 1,000-row window (README).
  monitoring_pipeline_name: str = 'loopline-monitoring'
  min_realized_auc: float = 0.91
  drift_policy: drift_policy_lib.DriftPolicy = dataclasses.field(
      default_factory=drift_policy_lib.DriftPolicy)

  def __post_init__(self):
    for name in ('home', 'data_root', 'schema_path'):
      value = getattr(self, name)
      if '://' not in value:
        object.__setattr__(self, name, os.path.abspath(value))
    if self.first_span < 0 or self.last_span < self.first_span:
      raise ValueError(f'invalid span range {self.first_span}-{self.last_span}')
    if not 0.0 <= self.min_auc <= 1.0:
      raise ValueError(f'min_auc must be within [0, 1], got {self.min_auc}')
    if not 0.0 < self.max_ece <= 1.0:
      raise ValueError(f'max_ece must be within (0, 1], got {self.max_ece}')
    if self.max_trials < 1 or self.train_steps < 1 or self.tuner_train_steps < 1:
      raise ValueError('max_trials, train_steps and tuner_train_steps must be positive')

  @classmethod
  def for_home(cls, home: str, quick: bool = False, **overrides) -> 'PipelineConfig':
    """The config of a home as the command line opens it, to read or to run: ML Metadata on
    MySQL when $LOOPLINE_MLMD_URL (mysql://USER[:PASSWORD]@HOST[:PORT]/DB) is set, else the
    home's SQLite file. `quick`: the smoke-run settings (`quick()`)."""
    from metadata import connection as metadata_connection
    if os.environ.get(MLMD_URL_ENV) and 'mysql' not in overrides:
      overrides['mysql'] = metadata_connection.parse_mysql_url(os.environ[MLMD_URL_ENV])
    return cls.quick(home, **overrides) if quick else cls(home=home, **overrides)

  @classmethod
  def quick(cls, home: str, **overrides) -> 'PipelineConfig':
    """Smoke run: the full component chain on few steps and a two-trial search, Beam in-process."""
    settings = dict(max_trials=2, tuner_train_steps=100, train_steps=300,
                    beam_pipeline_args=IN_MEMORY_BEAM_ARGS)
    settings.update(overrides)
    return cls(home=home, **settings)

  @property
  def pipeline_root(self) -> str:
    return home_lib.pipeline_root(self.home)

  @property
  def metadata_path(self) -> str:
    return home_lib.metadata_path(self.home)

  @property
  def serving_model_dir(self) -> str:
    """Where the Pusher writes versions: `<serving_dir>/<model_name>/<version>/`."""
    return os.path.join(home_lib.serving_dir(self.home), self.model_name)

  def describe(self) -> List[str]:
    return [f'home: {self.home}',
            f'spans: {self.first_span}-{self.last_span} under {self.data_root}',
            f'tuning: {"on, " + str(self.max_trials) + " trials" if self.enable_tuning else "off"}',
            f'metadata: {"MySQL " + self.mysql.host if self.mysql else self.metadata_path}']
