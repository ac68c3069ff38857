"""AtomicPusher: TFX's Pusher, but a model server never sees a half-written version.

Same contract as `tfx.components.Pusher` (inputs `model`, `model_blessing`; output
`pushed_model` with the `pushed`, `pushed_destination`, `pushed_version` custom properties),
pushing only blessed models, to `<base_directory>/<version>/`. The difference is in the executor
(components/atomic_pusher/executor.py): copy to a temporary hidden directory, then rename; and a
model identical to one already pushed is not pushed twice.

Example:
  pusher = AtomicPusher(
      model=trainer.outputs['model'], model_blessing=evaluator.outputs['blessing'],
      push_destination=pusher_pb2.PushDestination(
          filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=serving_model_dir)))
"""
from tfx.components.pusher import component as pusher_component
from tfx.dsl.components.base import executor_spec

from components.atomic_pusher import executor


class AtomicPusher(pusher_component.Pusher):
  """Pusher with atomic, idempotent pushes (see module docstring)."""

  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)
