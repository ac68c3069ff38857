"""Contract of ServingLogExampleGen: parameters, output, the features it adds, its properties."""
from tfx.types import component_spec
from tfx.types import standard_artifacts

from models import features

# Parameters.
LOG_DIR_KEY = 'log_dir'
FEEDBACK_DIR_KEY = 'feedback_dir'
WINDOW_START_KEY = 'window_start'      # unix seconds, inclusive; absent: from the first record
WINDOW_END_KEY = 'window_end'          # unix seconds, exclusive; absent: up to the last record
MODEL_NAME_KEY = 'model_name'          # keep only logs of this model ('' keeps all)
INPUT_FINGERPRINT_KEY = 'input_fingerprint'   # busts the cache when logs or feedback change
# Optional input: the schema, whose always-present model features every logged example must have.
SCHEMA_KEY = 'schema'
# Output.
EXAMPLES_KEY = 'examples'

# Splits of the output: every logged example of the window, and the ones with ground truth
# (what the Evaluator scores realized performance on: `example_splits=['labeled']`).
SERVING_SPLIT = 'serving'
LABELED_SPLIT = 'labeled'
SPLITS = (SERVING_SPLIT, LABELED_SPLIT)
SUMMARY_FILE = 'serving_log_window.json'

# Features added to every logged example (the logged features are kept as they were received).
PREDICTION_FEATURE = 'prediction'        # float: the served P(big tipper)
MODEL_VERSION_FEATURE = 'model_version'  # int: the version that answered
REQUEST_ID_FEATURE = 'request_id'        # bytes
TIMESTAMP_FEATURE = 'log_timestamp'      # int: unix seconds of the request
METADATA_FEATURES = (PREDICTION_FEATURE, MODEL_VERSION_FEATURE, REQUEST_ID_FEATURE,
                     TIMESTAMP_FEATURE)
# The label (features.LABEL_KEY) is present only when ground truth was joined. A logged example
# carrying any of these names has them removed first: only ground truth becomes the label.
RESERVED_FEATURES = METADATA_FEATURES + (features.LABEL_KEY,)

# Custom properties of the Examples output (ints unless noted).
NUM_EXAMPLES_PROPERTY = 'num_examples'
NUM_LABELED_PROPERTY = 'num_labeled'
MODEL_VERSIONS_PROPERTY = 'model_versions'        # string "version:count,..."
COUNTS_PROPERTY = 'window_counts'                 # string: JSON of every count
SKIPPED_PROPERTIES = ('corrupt_records', 'truncated_files', 'skipped_bytes',
                      'temporary_files_ignored', 'num_unconvertible')
FEEDBACK_PROPERTIES = ('labels_unknown', 'labels_outside_window', 'duplicate_labels',
                       'conflicting_keys', 'invalid_rows', 'invalid_files')
# Logged examples without a value for a feature the model requires (schema input), and which.
MISSING_REQUIRED_PROPERTY = 'examples_missing_required'
MISSING_REQUIRED_FEATURES_PROPERTY = 'missing_required_features'   # string "fare:3,..."


class ServingLogExampleGenSpec(component_spec.ComponentSpec):
  PARAMETERS = {
      LOG_DIR_KEY: component_spec.ExecutionParameter(type=str),
      FEEDBACK_DIR_KEY: component_spec.ExecutionParameter(type=str, optional=True),
      WINDOW_START_KEY: component_spec.ExecutionParameter(type=int, optional=True),
      WINDOW_END_KEY: component_spec.ExecutionParameter(type=int, optional=True),
      MODEL_NAME_KEY: component_spec.ExecutionParameter(type=str, optional=True),
      INPUT_FINGERPRINT_KEY: component_spec.ExecutionParameter(type=str, optional=True),
  }
  INPUTS = {
      SCHEMA_KEY: component_spec.ChannelParameter(type=standard_artifacts.Schema, optional=True),
  }
  OUTPUTS = {
      EXAMPLES_KEY: component_spec.ChannelParameter(type=standard_artifacts.Examples),
  }
