"""Tiny SavedModels for the serving tests (built with TensorFlow, in temporary directories).

- `save_predict_model`: TF2 `tf.saved_model.save`, `serving_default` parses serialized tf.Examples
  with float features `x` and `y` and returns `probabilities = weight * x + y` ([-1, 1]) - the
  same contract as the pipeline's model (input `examples`, output `probabilities`), with a weight
  that tells versions apart.
- `save_classify_regress_model`: TF1 SavedModelBuilder with predict, classification and regression
  signatures.
- `save_gated_model`: a deliberately slow `serving_default` (as `save_predict_model`, weight 1):
  every call takes at least `min_seconds`, and lasts until the file `gate` exists, so a test
  decides when a call ends.
"""
import os

import tensorflow as tf

FEATURES = {'x': tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0]),
            'y': tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0])}


def example(x: float, y: float = 0.0, **extra) -> bytes:
  """A serialized tf.Example with float features x and y (and any extra string features)."""
  feature = {'x': tf.train.Feature(float_list=tf.train.FloatList(value=[x])),
             'y': tf.train.Feature(float_list=tf.train.FloatList(value=[y]))}
  for name, value in extra.items():
    feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


class _PredictModule(tf.Module):

  def __init__(self, weight: float):
    super().__init__()
    self.weight = tf.Variable(weight, dtype=tf.float32)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='examples')])
  def serve(self, examples):
    parsed = tf.io.parse_example(examples, FEATURES)
    return {'probabilities': self.weight * parsed['x'] + parsed['y']}

  @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name='pairs'),
                                tf.TensorSpec([None], tf.int64, name='offsets')])
  def two_inputs(self, pairs, offsets):
    return {'sums': tf.reduce_sum(pairs, axis=1) + tf.cast(offsets, tf.float32),
            'labels_bytes': tf.strings.as_string(offsets)}


def save_predict_model(path: str, weight: float = 1.0) -> str:
  module = _PredictModule(weight)
  tf.saved_model.save(module, path, signatures={'serving_default': module.serve,
                                                'two_inputs': module.two_inputs})
  return path


class _GatedModule(tf.Module):

  def __init__(self, gate: str, min_seconds: float):
    super().__init__()
    self.gate, self.min_seconds = gate, min_seconds

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='examples')])
  def serve(self, examples):
    started = tf.timestamp()

    def waiting(i):
      # The pattern depends on the loop variable: the file is looked for on every iteration.
      pattern = self.gate + tf.strings.substr(tf.strings.as_string(i), 0, 0)
      return tf.logical_or(tf.timestamp() - started < self.min_seconds,
                           tf.equal(tf.size(tf.io.matching_files(pattern)), 0))

    iterations = tf.while_loop(waiting, lambda i: i + 1, [tf.constant(0, tf.int64)])
    parsed = tf.io.parse_example(examples, FEATURES)
    return {'probabilities': parsed['x'] + parsed['y'] + 0.0 * tf.cast(iterations, tf.float32)}


def save_gated_model(path: str, gate: str, min_seconds: float) -> str:
  module = _GatedModule(gate, min_seconds)
  tf.saved_model.save(module, path, signatures={'serving_default': module.serve})
  return path


def save_classify_regress_model(path: str) -> str:
  with tf.Graph().as_default():
    serialized = tf.compat.v1.placeholder(tf.string, [None], name='tf_example')
    parsed = tf.io.parse_example(serialized, FEATURES)
    score = tf.sigmoid(2.0 * parsed['x'] + parsed['y'])
    scores = tf.concat([1.0 - score, score], axis=1)
    classes = tf.tile(tf.constant([['no', 'yes']]), [tf.shape(serialized)[0], 1])
    regression = 2.0 * parsed['x'] + parsed['y']
    with tf.compat.v1.Session() as session:
      builder = tf.compat.v1.saved_model.Builder(path)
      signatures = {
          'serving_default': tf.compat.v1.saved_model.predict_signature_def(
              {'examples': serialized}, {'probabilities': score}),
          'classify_it': tf.compat.v1.saved_model.classification_signature_def(
              serialized, classes, scores),
          'regress_it': tf.compat.v1.saved_model.regression_signature_def(serialized, regression),
      }
      builder.add_meta_graph_and_variables(session, ['serve'], signature_def_map=signatures)
      builder.save()
  return path


def corrupt_version(path: str) -> str:
  """A version directory whose saved_model.pb is garbage."""
  os.makedirs(path)
  with open(os.path.join(path, 'saved_model.pb'), 'wb') as f:
    f.write(b'this is not a SavedModel')
  return path
