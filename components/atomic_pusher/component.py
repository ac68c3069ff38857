"""AtomicPusher: TFX's Pusher, but a model server never sees a half-written version, and every
version carries its warm-up requests.

TFX Pusher's contract (inputs `model`, `model_blessing`; output `pushed_model` with the `pushed`,
`pushed_destination`, `pushed_version` custom properties), pushing only blessed models, to
`<base_directory>/<version>/`, plus an optional `examples` input (components/atomic_pusher/spec.py).
The differences are in the executor (components/atomic_pusher/executor.py): copy to a temporary
hidden directory, write the warm-up requests there, then rename; and a model identical to one
already pushed is not pushed twice.

With `examples`, the version gets TF Serving's `assets.extra/tf_serving_warmup_requests`:
`warmup_requests` examples of the `warmup_split` split (a shuffled batch) as PredictionLogs, built
by TFX's InfraValidator request builder (the file its `make_warmup` writes). TF Serving, and
Loopline's server, replay them before the version is AVAILABLE, so its first requests are not
slow.

Example:
  pusher = AtomicPusher(
      model=trainer.outputs['model'], model_blessing=evaluator.outputs['blessing'],
      examples=example_gen.outputs['examples'],
      push_destination=pusher_pb2.PushDestination(
          filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=serving_model_dir)))
"""
from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.proto import pusher_pb2
from tfx.types import standard_artifacts

from components.atomic_pusher import executor
from components.atomic_pusher import spec


class AtomicPusher(base_component.BaseComponent):
  """Pusher with atomic, idempotent pushes and warm-up requests (see module docstring)."""

  SPEC_CLASS = spec.AtomicPusherSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, model: types.BaseChannel, model_blessing: types.BaseChannel,
               push_destination: pusher_pb2.PushDestination,
               examples: Optional[types.BaseChannel] = None,
               warmup_requests: int = spec.DEFAULT_WARMUP_REQUESTS,
               warmup_split: str = spec.DEFAULT_WARMUP_SPLIT):
    super().__init__(spec=spec.AtomicPusherSpec(
        model=model, model_blessing=model_blessing, push_destination=push_destination,
        examples=examples, warmup_requests=warmup_requests, warmup_split=warmup_split,
        pushed_model=types.Channel(type=standard_artifacts.PushedModel)))
