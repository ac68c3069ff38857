"""One loaded SavedModel version: its SignatureDefs (as TF Serving reports them) and how to run them.

Inputs are validated against the signature before anything runs (names, dtypes, shapes), so a bad
request fails alone with INVALID_ARGUMENT and never poisons a batch.
"""
import os
import re

import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.python.distribute import distribute_utils
from tensorflow.python.eager.polymorphic_function import concrete_function

from serving import warmup
from serving.batching import CallTimer
from serving.errors import Code, ServingError, failed_precondition, invalid_argument
from serving.json_codec import TensorSpec, numpy_dtype

SERVE_TAG = 'serve'
_FUNCTION_NODE = re.compile(r'^(\{\{function_node [^}]*\}\}\s*)+')


def read_signature_defs(path: str) -> dict[str, meta_graph_pb2.SignatureDef]:
  """The SignatureDefs of the `serve` MetaGraph, read from saved_model.pb(txt) without loading."""
  saved_model = saved_model_pb2.SavedModel()
  pb_path = os.path.join(path, 'saved_model.pb')
  if os.path.exists(pb_path):
    with open(pb_path, 'rb') as f:
      saved_model.ParseFromString(f.read())
  else:
    with open(os.path.join(path, 'saved_model.pbtxt'), encoding='utf-8') as f:
      text_format.Parse(f.read(), saved_model)
  for meta_graph in saved_model.meta_graphs:
    if SERVE_TAG in meta_graph.meta_info_def.tags:
      return dict(meta_graph.signature_def)
  raise ValueError(f'No MetaGraph tagged "{SERVE_TAG}" in {path}')


def tensor_spec(info: meta_graph_pb2.TensorInfo) -> TensorSpec:
  name = types_pb2.DataType.Name(info.dtype)
  if info.tensor_shape.unknown_rank:
    return TensorSpec(name, None)
  return TensorSpec(name, tuple(int(d.size) for d in info.tensor_shape.dim))


def _op_error_message(message: str) -> str:
  """The informative line of a TF runtime error ("Could not parse example input, ..."), without
  the "Graph execution error" / "Detected at node" / "{{function_node ...}}" / stack-trace
  framing."""
  lines = [_FUNCTION_NODE.sub('', line.strip()) for line in message.split('\n')]
  useful = [line for line in lines if line and not line.startswith(('Graph execution error',
                                                                    'Detected at node', '[[',
                                                                    'File "', 'Stack trace',
                                                                    '<stack traces'))]
  return useful[0] if useful else lines[0]


class Signature:
  """One signature of a servable: its SignatureDef, input/output specs, and the function."""

  def __init__(self, name: str, signature_def: meta_graph_pb2.SignatureDef, function):
    self.name = name
    self.signature_def = signature_def
    self.inputs = {alias: tensor_spec(info) for alias, info in signature_def.inputs.items()}
    self.outputs = {alias: tensor_spec(info) for alias, info in signature_def.outputs.items()}
    self.method_name = signature_def.method_name
    self.timer = CallTimer()  # Its calls' durations: the batcher's fast path reads them.
    self._function = function
    # The call skips two per-call costs of the public `function(**inputs)` (timeit of the bundled
    # model's signature, one example: 619 -> ~410 µs a call):
    # - argument binding and capture lookup: `_call_flat` takes the inputs in the function's flat
    #   order (its kwargs sorted by name, as tf.nest flattens a dict) and the captured variables,
    #   resolved once here (a loaded model's never change);
    # - a loaded signature is a `_WrapperFunction` whose `_call_flat` maps every captured input
    #   through a distribution-strategy check on each call (~80 µs for this model's 37 captures,
    #   an AttributeError raised and caught per capture). Outside a strategy that mapping leaves
    #   each capture unchanged, or gives a distributed variable's handle: it is done once here, and
    #   the call goes to ConcreteFunction's own `_call_flat`.
    # Signature.validate has checked dtypes and shapes already. (No function: a gateway's
    # RemoteServable, which only validates.)
    self._captured_inputs = None if function is None else [
        x.handle if distribute_utils.is_distributed_variable(x) else x
        for x in function.captured_inputs]
    self.batchable = all(
        spec.shape is not None and len(spec.shape) >= 1 and spec.shape[0] == -1
        for spec in list(self.inputs.values()) + list(self.outputs.values()))

  def validate(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Inputs cast to the signature's dtypes; INVALID_ARGUMENT naming any mismatch."""
    missing, extra = sorted(set(self.inputs) - set(inputs)), sorted(set(inputs) - set(self.inputs))
    if missing or extra:
      raise invalid_argument(
          f'input size does not match signature: {len(inputs)}!={len(self.inputs)} '
          f'len({{{", ".join(sorted(inputs))}}}) != len({{{", ".join(sorted(self.inputs))}}}). '
          f'Sent extra: {{{", ".join(extra)}}}. Missing but required: {{{", ".join(missing)}}}.')
    checked = {}
    for alias, array in inputs.items():
      spec = self.inputs[alias]
      expected = numpy_dtype(spec.dtype)
      if expected is object:
        if array.dtype != object and array.dtype.kind != 'S':
          raise invalid_argument(f'Input {alias!r} expects {spec.dtype} but {array.dtype} was given')
      elif array.dtype != expected:
        safe = np.can_cast(array.dtype, expected, casting='same_kind') and array.dtype != object
        if not safe:
          raise invalid_argument(f'Input {alias!r} expects {spec.dtype} but {array.dtype} was given')
        array = array.astype(expected)
      if spec.shape is not None:
        compatible = len(spec.shape) == array.ndim and all(
            d == -1 or d == s for d, s in zip(spec.shape, array.shape))
        if not compatible:
          raise invalid_argument(f'Input {alias!r} has shape {list(array.shape)}, incompatible with '
                                 f'the signature shape {list(spec.shape)}')
      checked[alias] = array
    return checked

  def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Call the signature function on validated inputs (blocking; call from a worker thread)."""
    tensors = {alias: tf.constant(array, dtype=tf.string if array.dtype == object else None)
               for alias, array in inputs.items()}
    try:
      outputs = concrete_function.ConcreteFunction._call_flat(  # pylint: disable=protected-access
          self._function, tf.nest.flatten(tensors), self._captured_inputs)
    except tf.errors.OpError as e:
      code = Code(e.error_code) if e.error_code in Code._value2member_map_ else Code.UNKNOWN
      raise ServingError(code, _op_error_message(e.message)) from None
    except UnicodeDecodeError as e:
      # TensorFlow quotes the caller's bytes in some errors ("Could not parse example input,
      # value: '<the bytes>'"); when they are not UTF-8, its status never becomes an OpError and
      # its code is lost: the message bytes are this exception's `object`. The errors that quote
      # request data reject it: INVALID_ARGUMENT, as the op said, with the bytes escaped.
      raise invalid_argument(_op_error_message(e.object.decode('ascii', 'backslashreplace'))
                             ) from None
    except (TypeError, ValueError) as e:
      raise invalid_argument(str(e).split('\n')[0]) from None
    return {alias: tensor.numpy() for alias, tensor in outputs.items()}


class Servable:
  """A loaded model version."""

  def __init__(self, name: str, version: int, path: str):
    self.name = name
    self.version = version
    self.path = path
    self.signature_defs = read_signature_defs(path)  # All of them, as TF Serving reports them.
    signature_defs = self.signature_defs
    loaded = tf.saved_model.load(path, tags=[SERVE_TAG])
    self._loaded = loaded  # Keeps the functions' variables alive.
    self.signatures = {name: Signature(name, signature_defs[name], function)
                       for name, function in loaded.signatures.items() if name in signature_defs}
    if not self.signatures:
      raise ValueError(f'SavedModel at {path} has no signatures')
    # TF Serving replays the version's warm-up requests before it is AVAILABLE; a failing warm-up
    # fails the load (serving/warmup.py).
    self.warmup_requests = warmup.replay(self)

  def signature(self, name: str) -> Signature:
    if name not in self.signatures:
      raise failed_precondition(f'Serving signature key "{name}" not found.')
    return self.signatures[name]

  def example_signature(self, name: str, kind: str) -> tuple[Signature, str]:
    """The signature for classify/regress and its single DT_STRING input alias."""
    signature = self.signature(name)
    if len(signature.inputs) != 1:
      raise invalid_argument(f'Expected one input Tensor for {kind}, signature {name} has '
                             f'{len(signature.inputs)}')
    (alias, spec), = signature.inputs.items()
    if spec.dtype != 'DT_STRING':
      raise invalid_argument(f'{kind.capitalize()} signature input {alias} must be DT_STRING '
                             f'(serialized tf.Example), is {spec.dtype}')
    if kind == 'classify' and not {'classes', 'scores'} & set(signature.outputs):
      raise invalid_argument(f'Expected classification signature outputs to contain "classes" '
                             f'and/or "scores"; signature {name} has {sorted(signature.outputs)}')
    if kind == 'regress' and 'outputs' not in signature.outputs:
      raise invalid_argument(f'No regression output "outputs" in signature {name}; it has '
                             f'{sorted(signature.outputs)}')
    return signature, alias
