"""Where Loopline keeps everything it produces: one home directory.

`./loopline_home` by default, moved with the `LOOPLINE_HOME` environment variable or the CLI's
`--home` flag. Pure path logic, no TFX import.
"""
import os

HOME_ENV_VAR = 'LOOPLINE_HOME'
DEFAULT_HOME = 'loopline_home'
MODEL_NAME = 'big_tipper'


def resolve_home(explicit: str | None = None) -> str:
  """The home directory: the explicit value, else $LOOPLINE_HOME, else ./loopline_home."""
  return os.path.abspath(explicit or os.environ.get(HOME_ENV_VAR) or DEFAULT_HOME)


def pipeline_root(home: str) -> str:
  return os.path.join(home, 'pipeline_root')


def metadata_path(home: str) -> str:
  return os.path.join(home, 'metadata', 'metadata.sqlite')


def serving_dir(home: str) -> str:
  """TF Serving model base directory: `<serving_dir>/<model_name>/<version>/`."""
  return os.path.join(home, 'serving')


def request_log_dir(home: str) -> str:
  return os.path.join(home, 'request_logs')


def reports_dir(home: str) -> str:
  return os.path.join(home, 'reports')


def serving_config_path(home: str) -> str:
  """TF Serving's `models.config` (model_config_list with version labels) for the home's models.

  The embedded server reads it (and re-reads it on change); the model registry writes it
  atomically when a version is promoted or rolled back; a real TF Serving can read the same file.
  """
  return os.path.join(serving_dir(home), 'models.config')


def feedback_dir(home: str) -> str:
  """Ground truth delivered for logged requests (request id -> label files)."""
  return os.path.join(home, 'feedback')
