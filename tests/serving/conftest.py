"""Shared fixtures: tiny models built once per session, copied into per-test model directories,
and servers on ephemeral loopback ports."""
import os
import shutil

import pytest

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


def push(built_models, key: str, base_path: str, version: int) -> str:
  """Publish a built model as `<base_path>/<version>` the way the Pusher does (temp + rename)."""
  os.makedirs(base_path, exist_ok=True)
  temp = os.path.join(base_path, f'.tmp-{version}')
  shutil.copytree(built_models[key], temp)
  final = os.path.join(base_path, str(version))
  os.rename(temp, final)
  return final


def make_config(base_path: str, name: str = 'm', **overrides) -> ServerConfig:
  """A ServerConfig on ephemeral loopback ports serving one model from `base_path`."""
  config = ServerConfig(model_config=single_model_proto(name, base_path), rest_port=0,
                        grpc_port=0, file_system_poll_wait_seconds=0.1,
                        shutdown_grace_seconds=5.0)
  for key, value in overrides.items():
    setattr(config, key, value)
  return config
