"""The command line: bad input is reported before any pipeline starts, with exit code 2."""
import os

import pytest

from core import spans
from loopline import cli


def _run(capsys, *argv):
  code = cli.main(list(argv))
  return code, capsys.readouterr().err


def test_missing_data_directory(tmp_path, capsys):
  code, err = _run(capsys, '--home', str(tmp_path), 'train', '--quick',
                   '--data-root', str(tmp_path / 'nowhere'))
  assert code == cli.EXIT_BAD_INPUT
  assert "data directory" in err and 'nowhere' in err and 'does not exist' in err


def test_empty_span(sample_data_root, tmp_path, capsys):
  open(spans.span_path(sample_data_root, 2), 'w').close()
  code, err = _run(capsys, '--home', str(tmp_path), 'train', '--quick', '--spans', '1-2',
                   '--data-root', sample_data_root)
  assert code == cli.EXIT_BAD_INPUT and 'span-2/version-1/data.csv is empty' in err


def test_malformed_schema(sample_data_root, tmp_path, capsys):
  schema = tmp_path / 'schema.pbtxt'
  schema.write_text('feature { name: "fare" type: FLAOT }')
  code, err = _run(capsys, '--home', str(tmp_path), 'train', '--quick', '--spans', '1-2',
                   '--data-root', sample_data_root, '--schema', str(schema))
  assert code == cli.EXIT_BAD_INPUT and 'is malformed' in err and 'FLAOT' in err


def test_missing_schema(sample_data_root, tmp_path, capsys):
  code, err = _run(capsys, '--home', str(tmp_path), 'train', '--quick', '--spans', '1-2',
                   '--data-root', sample_data_root, '--schema', str(tmp_path / 'none.pbtxt'))
  assert code == cli.EXIT_BAD_INPUT and 'none.pbtxt' in err and 'does not exist' in err


def test_a_missing_holdout_span_is_bad_input_before_anything_runs(sample_data_root, tmp_path,
                                                                  capsys):
  home = tmp_path / 'home'
  code, err = _run(capsys, '--home', str(home), 'train', '--quick', '--spans', '1-2',
                   '--data-root', sample_data_root, '--holdout-spans', '6-8')
  assert code == cli.EXIT_BAD_INPUT and 'span(s) [6, 7, 8] not found' in err
  assert not os.path.exists(home / 'metadata') and not os.path.exists(home / 'pipeline_root')


def test_a_holdout_among_the_training_spans_is_bad_input(sample_data_root, tmp_path, capsys):
  code, err = _run(capsys, '--home', str(tmp_path), 'train', '--quick', '--spans', '1-2',
                   '--data-root', sample_data_root, '--holdout-spans', '2-2')
  assert code == cli.EXIT_BAD_INPUT
  assert 'holdout spans 2-2 overlap the training spans 1-2' in err


def test_the_default_holdout_is_the_future_spans_when_they_exist_and_do_not_train(
    sample_data_root, tmp_path):
  from pipeline import training_run
  from pipeline.config import PipelineConfig
  assert training_run.default_holdout(PipelineConfig(home=str(tmp_path))) == ((6, 8), None)
  spans_missing = training_run.default_holdout(PipelineConfig(
      home=str(tmp_path), data_root=sample_data_root, first_span=1, last_span=2))
  assert spans_missing[0] is None and 'span(s) [6, 7, 8] not found' in spans_missing[1]
  training = training_run.default_holdout(PipelineConfig(home=str(tmp_path), last_span=8))
  assert training == (None, 'no time-ordered holdout: the future spans 6-8 are among the '
                            'training spans 1-8')


def test_an_unusable_severity_policy_is_bad_input(sample_data_root, tmp_path, capsys):
  policy = tmp_path / 'policy.json'
  policy.write_text('{"warning_types": ["COMPARATOR_L_INFTY"]}')
  for command in ('train', 'validate'):
    code, err = _run(capsys, '--home', str(tmp_path), command, '--quick', '--spans', '1-2',
                     '--data-root', sample_data_root, '--severity-policy', str(policy))
    assert code == cli.EXIT_BAD_INPUT, command
    assert "policy.json': unknown anomaly type(s) in warning_types: ['COMPARATOR_L_INFTY']" in err


def test_validate_checks_its_inputs_too(tmp_path, capsys):
  code, err = _run(capsys, '--home', str(tmp_path), 'validate', '--data-root',
                   str(tmp_path / 'nowhere'))
  assert code == cli.EXIT_BAD_INPUT and 'does not exist' in err


@pytest.mark.parametrize('text', ['a-b', '5-1', '-1'])
def test_bad_span_range_is_a_usage_error(text, capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.build_parser().parse_args(['train', '--spans', text])
  assert exit_info.value.code == 2
  assert 'span range' in capsys.readouterr().err


def test_home_comes_from_flag_then_environment(monkeypatch, tmp_path):
  from core import home
  monkeypatch.setenv('LOOPLINE_HOME', str(tmp_path / 'env'))
  assert home.resolve_home(None) == str(tmp_path / 'env')
  assert home.resolve_home(str(tmp_path / 'flag')) == str(tmp_path / 'flag')
  monkeypatch.delenv('LOOPLINE_HOME')
  assert home.resolve_home(None) == os.path.abspath('loopline_home')


@pytest.mark.parametrize('command', [['train', '--quick'], ['monitor'], ['loop', '--quick']])
def test_runs_take_ml_metadata_from_the_environment(command, monkeypatch, tmp_path, capsys):
  """LOOPLINE_MLMD_URL puts every command's ML Metadata on MySQL, the runs' too (`make run` on
  MySQL: tests/test_loop_e2e.py runs the loop so); a bad URL stops the command before it starts."""
  monkeypatch.setenv('LOOPLINE_MLMD_URL', 'mysql://127.0.0.1/metadb')
  code, err = _run(capsys, '--home', str(tmp_path), *command)
  assert code == cli.EXIT_BAD_INPUT
  assert "MySQL URL 'mysql://127.0.0.1/metadb' has no user" in err
  assert not os.path.exists(tmp_path / 'metadata')


def test_the_environments_ml_metadata_url_reaches_the_pipeline_config(monkeypatch, tmp_path):
  from pipeline.config import PipelineConfig
  monkeypatch.setenv('LOOPLINE_MLMD_URL', 'mysql://ml:pw@db.example:3307/metadb')
  args = cli.build_parser().parse_args(['--home', str(tmp_path), 'train', '--quick',
                                        '--spans', '1-2'])
  config = cli._train_config(args)            # pylint: disable=protected-access
  assert (config.mysql.host, config.mysql.port, config.mysql.database) == (
      'db.example', 3307, 'metadb')
  assert config.max_trials == PipelineConfig.quick(str(tmp_path)).max_trials
  assert (config.first_span, config.last_span) == (1, 2)
  monkeypatch.delenv('LOOPLINE_MLMD_URL')
  assert cli._train_config(args).mysql is None  # pylint: disable=protected-access
