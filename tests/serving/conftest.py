"""Shared fixtures: tiny models built once per session, copied into per-test model directories,
and servers on ephemeral loopback ports."""
import os
import shutil

import pytest

from serving import warmup
from serving.config import ServerConfig, single_model_proto
import serving_test_models as model_factory


@pytest.fixture(scope='session')
def built_models(tmp_path_factory):
  """{'w1': predict model weight 1, 'w2': weight 2, 'w3': weight 3, 'cr': classify/regress}."""
  root = tmp_path_factory.mktemp('built_models')
  paths = {f'w{w}': model_factory.save_predict_model(str(root / f'w{w}'), float(w))
           for w in (1, 2, 3)}
  paths['cr'] = model_factory.save_classify_regress_model(str(root / 'cr'))
  return paths


def push(built_models, key: str, base_path: str, version: int, warmup_requests: int = 0) -> str:
  """Publish a built model as `<base_path>/<version>` the way the Pusher does (temp + rename),
  with a warm-up file of `warmup_requests` requests (none: no file)."""
  os.makedirs(base_path, exist_ok=True)
  temp = os.path.join(base_path, f'.tmp-{version}')
  shutil.copytree(built_models[key], temp)
  if warmup_requests:
    add_warmup_file(temp, warmup_requests)
  final = os.path.join(base_path, str(version))
  os.rename(temp, final)
  return final


def add_warmup_file(version_dir: str, count: int = 10, name: str = 'm') -> str:
  """Write `count` warm-up Predict requests (one example each, as TFX's InfraValidator builds
  them) into a pushed version; the file's path."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from tensorflow_serving.apis import predict_pb2  # pylint: disable=import-outside-toplevel
  requests = []
  for i in range(count):
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = name, 'serving_default'
    request.inputs['examples'].CopyFrom(tf.make_tensor_proto([model_factory.example(float(i))]))
    requests.append(request)
  return warmup.write_warmup_file(version_dir, [warmup.prediction_log(r) for r in requests])


def make_config(base_path: str, name: str = 'm', **overrides) -> ServerConfig:
  """A ServerConfig on ephemeral loopback ports serving one model from `base_path`."""
  config = ServerConfig(model_config=single_model_proto(name, base_path), rest_port=0,
                        grpc_port=0, file_system_poll_wait_seconds=0.1,
                        shutdown_grace_seconds=5.0)
  for key, value in overrides.items():
    setattr(config, key, value)
  return config


SHARED_CONFIG = """
model_config_list {{
  config {{
    name: "m" base_path: "{m}" model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
    version_labels {{ key: "stable" value: 1 }}
    version_labels {{ key: "canary" value: 2 }}
  }}
  config {{ name: "cr" base_path: "{cr}" }}
}}
"""


@pytest.fixture(scope='session')
def shared_models_dir(built_models, tmp_path_factory):
  """`m` (version 1 = weight 1 = stable, version 2 = weight 2 = canary) and `cr` (version 7)."""
  root = tmp_path_factory.mktemp('shared_serving')
  push(built_models, 'w1', str(root / 'm'), 1)
  push(built_models, 'w2', str(root / 'm'), 2)
  push(built_models, 'cr', str(root / 'cr'), 7)
  return root


@pytest.fixture(scope='session')
def shared_server(shared_models_dir):
  """One embedded server for the REST, gRPC and fuzz tests (read-only use: no reloads)."""
  from serving.config import parse_model_config_text
  from serving.server import ServerThread
  text = SHARED_CONFIG.format(m=shared_models_dir / 'm', cr=shared_models_dir / 'cr')
  config = make_config(str(shared_models_dir / 'm'), model_config=parse_model_config_text(text),
                       max_body_bytes=1 << 20)
  with ServerThread(config) as server:
    yield server
