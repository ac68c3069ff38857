"""Contract of TrainingBaselineResolver: parameters, output and the properties it records."""
from tfx import types
from tfx.types import component_spec

# Parameters.
METADATA_URL_KEY = 'metadata_url'     # where ML Metadata is: grpc://, mysql:// or sqlite:///
MODEL_NAME_KEY = 'model_name'
MODEL_VERSION_KEY = 'model_version'   # the served version; 0 or absent: the latest push
# Output.
BASELINE_KEY = 'baseline'

LATEST = 0
# Custom properties of the output (besides the manifest file, manifest.BASELINE_FILE).
MODEL_VERSION_PROPERTY = 'model_version'
URI_PROPERTIES = ('pushed_model_uri', 'model_uri', 'examples_uri', 'statistics_uri')


class TrainingBaseline(types.Artifact):
  """The training data, statistics and model of one served version (baseline.json)."""
  TYPE_NAME = 'LooplineTrainingBaseline'


class TrainingBaselineResolverSpec(types.ComponentSpec):
  PARAMETERS = {
      METADATA_URL_KEY: component_spec.ExecutionParameter(type=str),
      MODEL_NAME_KEY: component_spec.ExecutionParameter(type=str),
      MODEL_VERSION_KEY: component_spec.ExecutionParameter(type=int, optional=True),
  }
  INPUTS = {}
  OUTPUTS = {
      BASELINE_KEY: component_spec.ChannelParameter(type=TrainingBaseline),
  }
