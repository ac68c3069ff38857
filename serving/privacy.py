"""Per-feature redaction and keyed hashing of tf.Examples before a logged request reaches disk.

- Redacted features are removed from the example.
- Hashed features keep their presence and arity; every value becomes the hex HMAC-SHA256 (keyed
  with a server secret, first 32 hex digits) of its text form, in a bytes_list. Equal values still
  join (e.g. for counting or deduplication), but the raw value cannot be recovered without the key.
A serialized input that is not a parseable tf.Example while rules are configured is replaced by
empty bytes: when in doubt, nothing leaves the process.
"""
import hashlib
import hmac

from google.protobuf.message import DecodeError


class PrivacyFilter:
  """Applies one server's redaction and hashing rules."""

  def __init__(self, redact_features=(), hash_features=(), hash_key: bytes = b'',
               example_input_key: str = 'examples'):
    """`example_input_key`: the predict input alias carrying serialized tf.Examples."""
    self.example_input_key = example_input_key
    self.redact = frozenset(redact_features)
    self.hash = frozenset(hash_features)
    if self.hash and not hash_key:
      raise ValueError('Hashing features requires a key')
    self._key = hash_key

  @classmethod
  def from_config(cls, privacy) -> 'PrivacyFilter':
    """The filter of a `serving.config.PrivacyConfig` (a server's, or a worker pool's)."""
    return cls(privacy.redact_features, privacy.hash_features, privacy.hash_key,
               privacy.example_input_key)

  @property
  def active(self) -> bool:
    return bool(self.redact or self.hash)

  def hash_value(self, value) -> bytes:
    if isinstance(value, bytes):
      text = value
    elif isinstance(value, float):
      text = repr(value).encode('ascii')
    else:
      text = str(value).encode('utf-8')
    return hmac.new(self._key, text, hashlib.sha256).hexdigest()[:32].encode('ascii')

  def apply(self, example):
    """Redact and hash in place; returns the example."""
    features = example.features.feature
    for name in self.redact & set(features):
      del features[name]
    for name in self.hash & set(features):
      feature = features[name]
      kind = feature.WhichOneof('kind')
      values = list(getattr(feature, kind).value) if kind else []
      feature.Clear()
      feature.bytes_list.value.extend(self.hash_value(v) for v in values)
    return example

  def apply_serialized(self, serialized: bytes) -> bytes:
    if not self.active:
      return serialized
    # TensorFlow's protos only where rules apply: the request-log writer process starts without.
    from tensorflow.core.example import example_pb2  # pylint: disable=import-outside-toplevel
    example = example_pb2.Example()
    try:
      example.ParseFromString(serialized)
    except DecodeError:
      return b''
    return self.apply(example).SerializeToString()
