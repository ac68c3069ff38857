"""TF Serving's REST API (and /monitoring/prometheus/metrics) on a small asyncio HTTP/1.1 server.

Routes (case-insensitive keywords, as in TF Serving's http_rest_api_handler):
  POST /v1/models/{name}[/versions/{v}|/labels/{l}]:(predict|classify|regress)
  GET  /v1/models/{name}[/versions/{v}|/labels/{l}][/metadata]
  GET  /monitoring/prometheus/metrics
Every answer, errors included, is JSON (`{"error": "..."}`) except the metrics text. Extra headers:
`X-Request-Id` (echoed or generated) on every answer, `X-Model-Version` on inferences.
"""
import asyncio
import http
import logging
import re

from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2

from serving import json_codec
from serving import metrics as metrics_lib
from serving import protos
from serving.backend import Target
from serving.config import ServerConfig
from serving.errors import ServingError, invalid_argument
from serving.service import CallContext, InferenceService, request_id_or_new

log = logging.getLogger('serving.rest')
METRICS_PATH = '/monitoring/prometheus/metrics'
MAX_HEADER_BYTES = 64 * 1024
_TARGET = r'/v1/models/([^/:]+)(?:/versions/([^/:]+)|/labels/([^/:]+))?'
_INFERENCE_ROUTE = re.compile(_TARGET + r':(classify|regress|predict)', re.IGNORECASE)
_MODEL_ROUTE = re.compile(_TARGET + r'(/metadata)?', re.IGNORECASE)
_REASONS = {499: 'Client Closed Request'}


class _HttpError(Exception):
  """A protocol-level failure answered before any routing (bad framing, too large...)."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status
    self.message = message


def _json_dict(message) -> dict:
  return json_format.MessageToDict(message, including_default_value_fields=True,
                                   preserving_proto_field_name=True)


def _parse_target(name: str, version: str | None, label: str | None) -> Target:
  if version is not None:
    if not version.isdigit() or int(version) >= 2**63:
      raise invalid_argument(f'Failed to convert version: {version} to numeric.')
    return Target(name, version=int(version))
  return Target(name, label=label)


class RestServer:
  """Serves one InferenceService over HTTP; drains in-flight requests on stop()."""

  def __init__(self, service: InferenceService, metrics: metrics_lib.Metrics, config: ServerConfig):
    self._service = service
    self._metrics = metrics
    self._config = config
    self._server = None
    self._idle_writers: set = set()
    self._busy = 0
    self._drained = asyncio.Event()
    self._closing = False

  async def start(self, host: str, port: int) -> int:
    self._server = await asyncio.start_server(self._connection, host, port,
                                              limit=MAX_HEADER_BYTES, reuse_address=True,
                                              reuse_port=self._config.workers > 1)
    return self._server.sockets[0].getsockname()[1]

  async def stop(self, grace_seconds: float):
    """Stop accepting, close idle keep-alive connections, let in-flight requests finish."""
    self._closing = True
    self._server.close()
    for writer in list(self._idle_writers):
      writer.close()
    if self._busy:
      self._drained.clear()
      try:
        await asyncio.wait_for(self._drained.wait(), grace_seconds)
      except asyncio.TimeoutError:
        log.warning('%d REST requests still running after %.0f s', self._busy, grace_seconds)
    await self._server.wait_closed()

  async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
    try:
      keep_alive = True
      while keep_alive and not self._closing:
        self._idle_writers.add(writer)
        try:
          head = await reader.readuntil(b'\r\n\r\n')
        except asyncio.LimitOverrunError:
          await self._send(writer, 431, {'error': 'Request header fields too large'}, {}, False)
          return
        finally:
          self._idle_writers.discard(writer)
        self._busy += 1
        try:
          keep_alive = await self._exchange(head, reader, writer)
        finally:
          self._busy -= 1
          if self._busy == 0:
            self._drained.set()
    except (asyncio.IncompleteReadError, ConnectionError):
      pass
    finally:
      writer.close()

  async def _exchange(self, head: bytes, reader, writer) -> bool:
    """Read one request's body, answer it; returns whether the connection stays open."""
    request_id = None
    try:
      lines = head.decode('latin-1').split('\r\n')
      parts = lines[0].split(' ')
      if len(parts) != 3 or not parts[2].startswith('HTTP/1.'):
        raise _HttpError(400, f'Malformed HTTP request line: {lines[0][:100]!r}')
      method, path, protocol = parts
      headers = {}
      for line in lines[1:]:
        if line:
          name, sep, value = line.partition(':')
          if not sep:
            raise _HttpError(400, f'Malformed HTTP header line: {line[:100]!r}')
          headers[name.strip().lower()] = value.strip()
      request_id = request_id_or_new(headers.get('x-request-id'))
      connection = headers.get('connection', '').lower()
      keep_alive = connection != 'close' and (protocol == 'HTTP/1.1' or connection == 'keep-alive')
      body = await self._read_body(headers, reader, writer)
    except _HttpError as e:
      await self._send(writer, e.status, {'error': e.message},
                       {'X-Request-Id': request_id or request_id_or_new(None)}, False)
      return False
    status, payload, extra = await self._dispatch(method, path, headers, body, request_id)
    extra['X-Request-Id'] = request_id
    await self._send(writer, status, payload, extra, keep_alive and not self._closing)
    return keep_alive

  async def _read_body(self, headers: dict, reader, writer) -> bytes:
    limit = self._config.max_body_bytes
    if 'chunked' in headers.get('transfer-encoding', '').lower():
      return await self._read_chunked(reader, limit)
    try:
      length = int(headers.get('content-length', '0'))
    except ValueError:
      raise _HttpError(400, 'Invalid Content-Length header') from None
    if length < 0:
      raise _HttpError(400, 'Invalid Content-Length header')
    if length > limit:
      raise _HttpError(413, f'Request body of {length} bytes is larger than the limit of '
                       f'{limit} bytes')
    if length and headers.get('expect', '').lower() == '100-continue':
      writer.write(b'HTTP/1.1 100 Continue\r\n\r\n')
    return await reader.readexactly(length) if length else b''

  @staticmethod
  async def _read_chunked(reader, limit: int) -> bytes:
    chunks, total = [], 0
    while True:
      size_line = await reader.readuntil(b'\r\n')
      try:
        size = int(size_line.split(b';')[0].strip(), 16)
      except ValueError:
        raise _HttpError(400, 'Malformed chunked request body') from None
      if size == 0:
        while await reader.readuntil(b'\r\n') != b'\r\n':  # Trailer lines, then the blank one.
          pass
        return b''.join(chunks)
      total += size
      if total > limit:
        raise _HttpError(413, f'Request body is larger than the limit of {limit} bytes')
      chunks.append(await reader.readexactly(size))
      await reader.readexactly(2)

  async def _send(self, writer, status: int, payload, extra_headers: dict, keep_alive: bool):
    if isinstance(payload, bytes):
      body, content_type = payload, 'application/json'
    elif isinstance(payload, str):
      body, content_type = payload.encode('utf-8'), 'text/plain; version=0.0.4; charset=utf-8'
    else:
      body, content_type = json_codec.dumps(payload), 'application/json'
    reason = _REASONS.get(status) or http.HTTPStatus(status).phrase
    lines = [f'HTTP/1.1 {status} {reason}', f'Content-Type: {content_type}',
             f'Content-Length: {len(body)}', 'Connection: ' + ('keep-alive' if keep_alive else
                                                               'close')]
    lines += [f'{k}: {v}' for k, v in extra_headers.items()]
    writer.write(('\r\n'.join(lines) + '\r\n\r\n').encode('latin-1') + body)
    await writer.drain()

  async def _dispatch(self, method: str, raw_path: str, headers: dict, body: bytes,
                      request_id: str):
    """(HTTP status, payload, extra headers) for one request."""
    path = raw_path.split('?', 1)[0]
    try:
      if path.lower() == METRICS_PATH:
        if method != 'GET':
          raise invalid_argument(f'Malformed request: {method} {path}')
        return 200, self._metrics.render(), {}
      if not path.lower().startswith('/v1/'):
        return 404, {'error': f'Not found: {method} {path}'}, {}
      if method == 'POST' and (match := _INFERENCE_ROUTE.fullmatch(path)):
        name, version, label, verb = match.groups()
        ctx = CallContext('REST', request_id, self._routing_key(headers))
        return await self._infer(verb.lower(), _parse_target(name, version, label), body, ctx)
      if method == 'GET' and (match := _MODEL_ROUTE.fullmatch(path)):
        name, version, label, metadata = match.groups()
        target = _parse_target(name, version, label)
        if metadata:
          return 200, await self._metadata(target), {}
        return 200, await self._status(target), {}
      if method == 'GET' and path.lower().rstrip('/') == '/v1/models':
        raise invalid_argument('Missing model name in request.')
      raise invalid_argument(f'Malformed request: {method} {path}')
    except ServingError as e:
      return e.http_status, json_codec.error_body(e.message), {}
    except Exception:  # pylint: disable=broad-except  # Logged; the client gets a 500, not a reset.
      log.exception('Unexpected error answering %s %s', method, path)
      return 500, json_codec.error_body('Internal error'), {}

  def _routing_key(self, headers: dict) -> str | None:
    header = self._config.sticky_header
    return headers.get(header.lower()) if header else None

  async def _infer(self, verb: str, target: Target, body: bytes, ctx: CallContext):
    doc = json_codec.parse_json(body)
    if verb == 'predict':
      signature_name = json_codec.signature_name_of(doc)
      row_format = []

      def decode(signature):
        decoded = json_codec.predict_inputs(doc, signature.inputs)
        row_format.append(decoded.row_format)
        return decoded.inputs

      answer = await self._service.predict(ctx, target, signature_name, decode)
      payload = json_codec.predict_response(answer.outputs, row_format[0])
    else:
      decoded = json_codec.examples_body(doc)
      if verb == 'classify':
        answer = await self._service.classify(ctx, target, decoded.signature_name,
                                              decoded.examples)
        payload = json_codec.classify_response(answer.classes, answer.scores)
      else:
        answer = await self._service.regress(ctx, target, decoded.signature_name,
                                             decoded.examples)
        payload = json_codec.regress_response(answer.values)
    return 200, payload, {'X-Model-Version': str(answer.version)}

  async def _resolved_version(self, target: Target) -> int | None:
    if target.label is None:
      return target.version
    return (await self._service.backend.resolve(target)).version

  async def _status(self, target: Target) -> dict:
    version = await self._resolved_version(target)
    statuses = await self._service.backend.status(target.name, version)
    return _json_dict(protos.status_response(statuses))

  async def _metadata(self, target: Target) -> dict:
    servable = await self._service.backend.resolve(target)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, signature_def in servable.signature_defs.items():
      signature_map.signature_def[key].CopyFrom(signature_def)
    spec = _json_dict(protos.model_spec(servable.name, servable.version))
    spec['signature_name'] = ''
    return {'model_spec': spec, 'metadata': {'signature_def': _json_dict(signature_map)}}
