"""deploy/: the TF Serving config parses with TF Serving's own proto, manifests are valid YAML of
the right kinds, and ports and batching values agree with the code's defaults."""
import os
import re

import pytest
import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from core.home import MODEL_NAME
from serving.config import (DEFAULT_GRPC_PORT, DEFAULT_REST_PORT, BatchingConfig,
                            load_model_config_file)
from serving.rest import METRICS_PATH

pytestmark = pytest.mark.timeout(60)
DEPLOY = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))), 'deploy')


def read(name: str) -> str:
  with open(os.path.join(DEPLOY, name), encoding='utf-8') as f:
    return f.read()


def flag(args: list[str], name: str) -> str:
  values = [a.split('=', 1)[1] for a in args if a.startswith(f'--{name}=')]
  assert len(values) == 1, (name, args)
  return values[0]


def test_models_config_parses_with_tf_servings_proto_and_has_no_logging_config():
  config = text_format.Parse(read('models.config'), model_server_config_pb2.ModelServerConfig())
  (entry,) = config.model_config_list.config
  assert entry.name == MODEL_NAME and entry.base_path == f'/models/{MODEL_NAME}'
  assert entry.model_platform == 'tensorflow'
  assert not entry.HasField('logging_config')
  assert 'logging_config' not in re.sub(r'#.*', '', read('models.config'))
  (ours,) = load_model_config_file(os.path.join(DEPLOY, 'models.config'))  # Our server agrees.
  assert ours.name == MODEL_NAME


def test_batching_and_monitoring_configs_match_the_code():
  values = dict(re.findall(r'(\w+) \{ value: (\d+) \}', read('batching.config')))
  defaults = BatchingConfig()
  assert {k: int(v) for k, v in values.items()} == {
      'max_batch_size': defaults.max_batch_size,
      'batch_timeout_micros': defaults.batch_timeout_micros,
      'num_batch_threads': defaults.num_batch_threads,
      'max_enqueued_batches': defaults.max_enqueued_batches}
  assert f'path: "{METRICS_PATH}"' in read('monitoring.config')


def test_kubernetes_deployment_and_service():
  documents = list(yaml.safe_load_all(read('kubernetes.yaml')))
  kinds = {d['kind']: d for d in documents}
  assert set(kinds) == {'Deployment', 'Service'}
  pod = kinds['Deployment']['spec']['template']['spec']
  containers = {c['name']: c for c in pod['containers']}
  tf_serving, gateway = containers['tf-serving'], containers['gateway']
  assert tf_serving['image'].startswith('tensorflow/serving:')
  upstream_grpc = int(flag(tf_serving['args'], 'port'))
  assert flag(gateway['args'], 'upstream') == f'localhost:{upstream_grpc}'
  gateway_ports = {p['name']: p['containerPort'] for p in gateway['ports']}
  assert gateway_ports == {'grpc': DEFAULT_GRPC_PORT, 'rest': DEFAULT_REST_PORT}
  assert int(flag(gateway['args'], 'grpc-port')) == DEFAULT_GRPC_PORT
  assert int(flag(gateway['args'], 'rest-port')) == DEFAULT_REST_PORT
  tf_ports = {p['containerPort'] for p in tf_serving['ports']}
  assert tf_ports.isdisjoint(gateway_ports.values())  # One pod: no port clash.
  service_ports = {p['name']: (p['port'], p['targetPort'])
                   for p in kinds['Service']['spec']['ports']}
  assert service_ports == {'grpc': (DEFAULT_GRPC_PORT, 'grpc'), 'rest': (DEFAULT_REST_PORT, 'rest')}
  assert kinds['Service']['spec']['selector'] == kinds['Deployment']['spec']['selector'][
      'matchLabels']
  assert 'logging_config' not in ''.join(tf_serving['args'])
  volumes = {v['name'] for v in pod['volumes']}
  for container in containers.values():
    assert {m['name'] for m in container['volumeMounts']} <= volumes


def test_kustomization_builds_the_config_map_from_the_deploy_files():
  kustomization = yaml.safe_load(read('kustomization.yaml'))
  assert kustomization['resources'] == ['kubernetes.yaml']
  (generator,) = kustomization['configMapGenerator']
  assert generator['name'] == 'loopline-serving-config'
  for name in generator['files']:
    assert os.path.exists(os.path.join(DEPLOY, name))


def test_kserve_inference_service():
  service = yaml.safe_load(read('kserve.yaml'))
  assert service['apiVersion'] == 'serving.kserve.io/v1beta1'
  assert service['kind'] == 'InferenceService'
  model = service['spec']['predictor']['model']
  assert model['modelFormat']['name'] == 'tensorflow'
  assert model['storageUri'].endswith(f'/{MODEL_NAME}')


def test_docker_compose_runs_tf_serving_behind_the_gateway():
  compose = yaml.safe_load(read('docker-compose.yml'))
  services = compose['services']
  assert services['tf-serving']['image'].startswith('tensorflow/serving:')
  tf_args = services['tf-serving']['command']
  upstream_grpc = int(flag(tf_args, 'port'))
  gateway_args = services['gateway']['command']
  assert flag(gateway_args, 'upstream') == f'tf-serving:{upstream_grpc}'
  published = {p.rsplit(':', 1)[-1] for p in services['gateway']['ports']}
  assert published == {str(DEFAULT_GRPC_PORT), str(DEFAULT_REST_PORT)}
  assert all(p.startswith('127.0.0.1:') for p in services['gateway']['ports'])
  mounted = {v.split(':')[0] for v in services['tf-serving']['volumes']}
  assert './models.config' in mounted and flag(tf_args, 'model_config_file').endswith(
      'models.config')
  assert os.path.exists(os.path.join(DEPLOY, services['gateway']['build']['dockerfile'].split(
      '/', 1)[1]))
  assert f'EXPOSE {DEFAULT_GRPC_PORT} {DEFAULT_REST_PORT}' in read('Dockerfile.gateway')
