"""Benchmark of the training pipeline against TFX's own Chicago Taxi example, on this machine.

    .venv/bin/python bench/pipeline_bench.py [--skip-tfx] [--scales 1,4,16] [--out FILE]

1. Loopline's pipeline without the Tuner on all 15,002 rows (spans 1-8), cold, then cached.
2. TFX's Chicago Taxi native-Keras example (tfx/examples/chicago_taxi_pipeline, shipped in the tfx
   package) on the same 15,002 rows, cold, then cached; same runner, same Beam arguments.
3. Loopline (no Tuner, training spans) at 1x, 4x and 16x the rows, each span's rows resampled
   with replacement, cold, to show how the cost grows.
Wall time per component comes from ML Metadata (execution start to last update). Prints a table
and writes JSON (default bench/results/pipeline.json). Targets (issue 2): ratio Loopline/TFX
<= 1.0 cold, cached rerun < 25% of the cold run. Nothing here is asserted by a test.
"""
import argparse
import csv
import json
import os
import random
import shutil
import sys
import tempfile
import time
import warnings

warnings.filterwarnings('ignore')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # pylint: disable=g-import-not-at-top
from tfx.orchestration import metadata

from core import spans as spans_lib
from metadata import connection as metadata_connection
from metadata import queries as mq
from pipeline import progress
from pipeline import training_pipeline
from pipeline.config import PipelineConfig

TFX_EXAMPLE_DIR = os.path.join(os.path.dirname(__import__('tfx').__file__), 'examples',
                               'chicago_taxi_pipeline')


def _component_times(connection_config, pipeline_name):
  store = metadata_connection.open_store(connection_config)
  run = mq.latest_run(store, pipeline_name)
  return {r.node_id: {'seconds': round(r.seconds, 1), 'state': r.state}
          for r in mq.execution_records(store, run)}


def _timed(label, pipeline, log_file):
  print(f'-- {label}', flush=True)
  started = time.monotonic()
  with progress.show_progress(log_file):
    LocalDagRunner().run(pipeline)
  return time.monotonic() - started


def run_loopline(home, data_root, first_span, last_span, label):
  config = PipelineConfig(home=home, data_root=data_root, first_span=first_span,
                          last_span=last_span, enable_tuning=False)
  seconds = _timed(label, training_pipeline.create_pipeline(
      config, training_pipeline.tuned_hyperparameters_exist(config)),
                   os.path.join(home, 'logs', 'bench.log'))
  return {'total_seconds': round(seconds, 1),
          'components': _component_times(
              training_pipeline.metadata_connection_config(config), config.pipeline_name)}


def run_tfx_example(home, label):
  sys.path.insert(0, TFX_EXAMPLE_DIR)
  import taxi_pipeline_native_keras as example  # pylint: disable=g-import-not-at-top
  metadata_path = os.path.join(home, 'metadata.db')
  pipeline = example._create_pipeline(  # pylint: disable=protected-access
      pipeline_name='chicago_taxi_native_keras', pipeline_root=os.path.join(home, 'root'),
      data_root=os.path.join(TFX_EXAMPLE_DIR, 'data', 'simple'),
      module_file=os.path.join(TFX_EXAMPLE_DIR, 'taxi_utils_native_keras.py'),
      serving_model_dir=os.path.join(home, 'serving'), metadata_path=metadata_path,
      beam_pipeline_args=list(PipelineConfig(home=home).beam_pipeline_args))
  seconds = _timed(label, pipeline, os.path.join(home, 'bench.log'))
  return {'total_seconds': round(seconds, 1),
          'components': _component_times(
              metadata.sqlite_metadata_connection_config(metadata_path),
              'chicago_taxi_native_keras')}


def resample_spans(source_root, target_root, spans, factor, seed=0):
  """Each span's rows drawn `factor` times as many, with replacement."""
  rng = random.Random(seed)
  for span in spans:
    with open(spans_lib.span_path(source_root, span), newline='') as f:
      reader = csv.DictReader(f)
      header, rows = reader.fieldnames, list(reader)
    path = spans_lib.span_path(target_root, span)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w', newline='') as f:
      writer = csv.DictWriter(f, fieldnames=header, lineterminator='\n')
      writer.writeheader()
      writer.writerows(rng.choices(rows, k=len(rows) * factor))
  return target_root


def _print_components(name, result):
  for component, info in result['components'].items():
    print(f'   {name:<9} {component:<32} {info["seconds"]:>7.1f}s  {info["state"]}')


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--skip-tfx', action='store_true')
  parser.add_argument('--scales', default='1,4,16')
  parser.add_argument('--out', default=os.path.join(os.path.dirname(__file__), 'results',
                                                     'pipeline.json'))
  args = parser.parse_args(argv)
  config = PipelineConfig(home='.')
  all_spans = sorted(spans_lib.list_spans(config.data_root))
  results = {'machine': {'cores': os.cpu_count()}, 'rows_all_spans': 15002}
  work = tempfile.mkdtemp(prefix='loopline-bench-')
  try:
    home = os.path.join(work, 'loopline')
    results['loopline_cold'] = run_loopline(home, config.data_root, all_spans[0], all_spans[-1],
                                            'Loopline, spans 1-8, cold')
    results['loopline_cached'] = run_loopline(home, config.data_root, all_spans[0],
                                              all_spans[-1], 'Loopline, spans 1-8, cached')
    if not args.skip_tfx:
      tfx_home = os.path.join(work, 'tfx')
      results['tfx_cold'] = run_tfx_example(tfx_home, 'TFX taxi example, cold')
      results['tfx_cached'] = run_tfx_example(tfx_home, 'TFX taxi example, cached')
    results['scaling'] = {}
    first, last = spans_lib.TRAINING_SPANS
    for factor in [int(s) for s in args.scales.split(',')]:
      data_root = resample_spans(config.data_root, os.path.join(work, f'data-{factor}x'),
                                 range(first, last + 1), factor)
      result = run_loopline(os.path.join(work, f'home-{factor}x'), data_root, first, last,
                            f'Loopline, training spans at {factor}x rows, cold')
      result['rows'] = sum(1 for s in range(first, last + 1)
                           for _ in open(spans_lib.span_path(data_root, s))) - (last - first + 1)
      results['scaling'][f'{factor}x'] = result
  finally:
    shutil.rmtree(work, ignore_errors=True)

  cold, cached = results['loopline_cold']['total_seconds'], results['loopline_cached'][
      'total_seconds']
  results['cached_fraction'] = round(cached / cold, 3)
  print('\n== Wall time per component (from ML Metadata)')
  _print_components('loopline', results['loopline_cold'])
  if 'tfx_cold' in results:
    _print_components('tfx', results['tfx_cold'])
  print('\n== Totals')
  print(f'   Loopline (no Tuner), 15,002 rows: cold {cold:.1f}s, cached {cached:.1f}s '
        f'({100 * cached / cold:.0f}% of cold; target < 25%)')
  if 'tfx_cold' in results:
    tfx_cold = results['tfx_cold']['total_seconds']
    results['ratio_loopline_to_tfx'] = round(cold / tfx_cold, 3)
    print(f'   TFX taxi example, 15,002 rows:    cold {tfx_cold:.1f}s, cached '
          f'{results["tfx_cached"]["total_seconds"]:.1f}s')
    print(f'   ratio Loopline / TFX (cold): {cold / tfx_cold:.2f} (target <= 1.0)')
  print('\n== Scaling (training spans, rows resampled, cold, no Tuner)')
  for factor, result in results['scaling'].items():
    print(f'   {factor:>4}: {result["rows"]:>7} rows  {result["total_seconds"]:>7.1f}s')
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump(results, f, indent=2)
  print(f'\nSaved {args.out}')


if __name__ == '__main__':
  main()
