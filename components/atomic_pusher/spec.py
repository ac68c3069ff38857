"""Contract of the AtomicPusher component: TFX Pusher's, plus the data its warm-up requests come
from, in one place."""
from tfx.types import component_spec
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs

EXAMPLES_KEY = 'examples'
WARMUP_REQUESTS_KEY = 'warmup_requests'
WARMUP_SPLIT_KEY = 'warmup_split'
# A few hundred requests: enough for TensorFlow's first-call work, well under TF Serving's limit
# of 1000 records, a fraction of a second to replay at load.
DEFAULT_WARMUP_REQUESTS = 200
DEFAULT_WARMUP_SPLIT = 'eval'


class AtomicPusherSpec(standard_component_specs.PusherSpec):
  """TFX's PusherSpec (inputs `model`, `model_blessing`, `infra_blessing`; parameters
  `push_destination`, `custom_config`; output `pushed_model`), plus: the optional `examples`
  (serialized tf.Examples, ExampleGen's output): `warmup_requests` examples of its
  `warmup_split` split become the version's warm-up requests."""
  PARAMETERS = {
      **standard_component_specs.PusherSpec.PARAMETERS,
      WARMUP_REQUESTS_KEY: component_spec.ExecutionParameter(type=int, optional=True),
      WARMUP_SPLIT_KEY: component_spec.ExecutionParameter(type=str, optional=True),
  }
  INPUTS = {
      **standard_component_specs.PusherSpec.INPUTS,
      EXAMPLES_KEY: component_spec.ChannelParameter(type=standard_artifacts.Examples,
                                                    optional=True),
  }
