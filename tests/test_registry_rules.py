"""Model registry, pure parts: stage rules (every refusal), the production history behind
rollback, and models.config rendering, atomic replacement and the writers' lock. No TFX, no MLMD."""
import multiprocessing
import os
import threading
import time

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from registry import serving_config, stages
from registry.errors import ConcurrentChangeError, RefusedError, ServingConfigError
from registry.stages import (ARCHIVED, DEV, PRODUCTION, STAGING, RegistryState, TransitionRecord,
                             VersionFacts)

M = 'big_tipper'


def ok(version, **overrides):
  facts = dict(version=version, pushed=True, blessed=True, directory_exists=True, load_error=None)
  facts.update(overrides)
  return VersionFacts(**facts)


def state(production=None, staging=None, history=None, stable_label=None, sequence=3):
  history = tuple(history if history is not None else ([production] if production else []))
  return RegistryState(production, staging, history, sequence, stable_label)


# ---- stage -------------------------------------------------------------------------------------

def test_first_blessed_push_bootstraps_production():
  plan = stages.plan_stage(M, state(), ok(10), {})
  assert plan.action == stages.BOOTSTRAP and plan.reason == stages.BOOTSTRAP_REASON
  assert (plan.production, plan.staging, plan.stable, plan.canary) == (10, None, 10, None)
  assert plan.changes == (stages.Change(10, DEV, PRODUCTION),)


def test_hand_set_stable_label_is_kept_and_the_push_goes_to_canary():
  plan = stages.plan_stage(M, state(stable_label=7), ok(10), {})
  assert plan.action == stages.STAGE
  assert (plan.production, plan.staging, plan.stable, plan.canary) == (None, 10, 7, 10)


def test_next_push_enters_staging_and_archives_the_previous_canary():
  plan = stages.plan_stage(M, state(production=10, staging=11), ok(12), {11: STAGING})
  assert plan.action == stages.STAGE
  assert (plan.production, plan.staging, plan.stable, plan.canary) == (10, 12, 10, 12)
  assert set(plan.changes) == {stages.Change(12, DEV, STAGING), stages.Change(11, STAGING, ARCHIVED)}


@pytest.mark.parametrize('version', [10, 11])
def test_staging_the_current_production_or_staging_version_changes_nothing(version):
  assert stages.plan_stage(M, state(production=10, staging=11), ok(version), {}) is None


def test_an_archived_version_is_restaged_only_when_asked():
  s = state(production=10, staging=None, history=[11, 10])
  assert stages.plan_stage(M, s, ok(11), {11: ARCHIVED}) is None     # cached re-run after rollback
  plan = stages.plan_stage(M, s, ok(11), {11: ARCHIVED}, restage_archived=True)
  assert plan.changes == (stages.Change(11, ARCHIVED, STAGING),) and plan.canary == 11


@pytest.mark.parametrize('facts, words', [
    (ok(12, blessed=False), 'not blessed'),
    (ok(12, blessed=None), 'no Evaluator blessing'),
    (ok(12, pushed=False), 'not pushed'),
    (ok(12, load_error='boom'), 'not loadable: boom'),
    (ok(12, directory_exists=False), 'directory does not exist'),
])
def test_stage_refuses_what_cannot_be_served(facts, words):
  with pytest.raises(RefusedError) as refused:
    stages.plan_stage(M, state(production=10), facts, {})
  assert words in str(refused.value) and 'big_tipper version 12' in str(refused.value)
  assert not refused.value.forceable


# ---- promote -----------------------------------------------------------------------------------

def test_promote_moves_stable_archives_the_old_production_and_clears_canary():
  plan = stages.plan_promote(M, state(production=10, staging=11), ok(11), {11: STAGING},
                             reason='canary looks good')
  assert plan.action == stages.PROMOTE and plan.reason == 'canary looks good' and not plan.forced
  assert (plan.production, plan.staging, plan.stable, plan.canary) == (11, None, 11, None)
  assert set(plan.changes) == {stages.Change(11, STAGING, PRODUCTION),
                               stages.Change(10, PRODUCTION, ARCHIVED)}


def test_promoting_another_version_keeps_the_canary():
  plan = stages.plan_promote(M, state(production=10, staging=11), ok(9), {9: ARCHIVED})
  assert (plan.stable, plan.canary) == (9, 11)
  assert stages.Change(9, ARCHIVED, PRODUCTION) in plan.changes


@pytest.mark.parametrize('facts, words', [
    (ok(12, blessed=False), 'not blessed'),
    (ok(12, pushed=False), 'not pushed'),
    (ok(12, load_error='no serving_default'), 'not loadable: no serving_default'),
])
def test_promote_refuses_unless_forced(facts, words):
  with pytest.raises(RefusedError) as refused:
    stages.plan_promote(M, state(production=10), facts, {})
  assert refused.value.forceable and words in str(refused.value)
  assert '--force' in str(refused.value)


def test_forced_promotion_records_what_it_overrode():
  facts = ok(12, pushed=False, blessed=None)
  plan = stages.plan_promote(M, state(production=10), facts, {}, reason='hotfix', force=True)
  assert plan.forced and plan.reason == 'hotfix'
  assert len(plan.overridden) == 2 and 'not pushed' in plan.overridden[0]


def test_force_on_a_clean_version_is_not_recorded_as_an_override():
  plan = stages.plan_promote(M, state(production=10), ok(12), {}, reason='why not', force=True)
  assert not plan.forced and plan.overridden == ()
  plan = stages.plan_promote(M, state(production=10), ok(12), {}, force=True)  # nothing to justify
  assert not plan.forced and plan.reason == 'no reason given'


def test_forced_promotion_needs_a_reason():
  with pytest.raises(RefusedError, match='needs a reason'):
    stages.plan_promote(M, state(production=10), ok(12, blessed=False), {}, force=True)


def test_missing_directory_cannot_be_forced():
  with pytest.raises(RefusedError) as refused:
    stages.plan_promote(M, state(production=10), ok(12, directory_exists=False), {},
                        reason='x', force=True)
  assert not refused.value.forceable and 'nothing to serve' in str(refused.value)


def test_promoting_the_production_version_is_refused():
  with pytest.raises(RefusedError, match='already in production'):
    stages.plan_promote(M, state(production=10), ok(10), {}, reason='x', force=True)


# ---- rollback ----------------------------------------------------------------------------------

def test_history_pushes_promotions_and_pops_rollbacks():
  log = [TransitionRecord(1, stages.BOOTSTRAP, 1, 1, None),
         TransitionRecord(2, stages.STAGE, 2, 1, 2),
         TransitionRecord(3, stages.PROMOTE, 2, 2, None),
         TransitionRecord(4, stages.PROMOTE, 3, 3, None)]
  s = RegistryState.replay(log)
  assert (s.production, s.staging, s.history, s.sequence) == (3, None, (1, 2, 3), 4)
  assert stages.rollback_target(s) == 2
  s = RegistryState.replay(log + [TransitionRecord(5, stages.ROLLBACK, 2, 2, None)])
  assert s.history == (1, 2) and stages.rollback_target(s) == 1   # two rollbacks: two steps back
  s = RegistryState.replay(log + [TransitionRecord(5, stages.ROLLBACK, 2, 2, None),
                                  TransitionRecord(6, stages.ROLLBACK, 1, 1, None)])
  assert s.production == 1 and stages.rollback_target(s) is None


def test_rollback_returns_stable_to_the_previous_version_and_keeps_the_canary():
  s = state(production=11, staging=12, history=[10, 11])
  plan = stages.plan_rollback(M, s, ok(stages.rollback_target(s)), {10: ARCHIVED}, reason='bad')
  assert plan.action == stages.ROLLBACK and plan.version == 10 and plan.reason == 'bad'
  assert (plan.production, plan.staging, plan.stable, plan.canary) == (10, 12, 10, 12)
  assert set(plan.changes) == {stages.Change(10, ARCHIVED, PRODUCTION),
                               stages.Change(11, PRODUCTION, ARCHIVED)}


def test_rollback_refusals():
  with pytest.raises(RefusedError, match='no production version'):
    stages.plan_rollback(M, state(), None, {})
  with pytest.raises(RefusedError, match='no previous production version'):
    stages.plan_rollback(M, state(production=10), None, {})
  s = state(production=11, history=[10, 11])
  with pytest.raises(RefusedError) as refused:
    stages.plan_rollback(M, s, ok(10, load_error='corrupt'), {})
  assert refused.value.forceable and 'corrupt' in str(refused.value)
  plan = stages.plan_rollback(M, s, ok(10, load_error='corrupt'), {}, reason='r', force=True)
  assert plan.forced and plan.overridden
  with pytest.raises(RefusedError, match='nothing to serve'):
    stages.plan_rollback(M, s, ok(10, directory_exists=False), {}, reason='r', force=True)


# ---- models.config -----------------------------------------------------------------------------

EXISTING = """
# hand-written
model_config_list {
  config { name: "other" base_path: "/models/other" model_platform: "tensorflow"
           model_version_policy { latest { num_versions: 2 } }
           version_labels { key: "gold" value: 3 } }
  config { name: "big_tipper" base_path: "/models/big_tipper" model_platform: "tensorflow"
           model_version_policy { latest { num_versions: 1 } }
           version_labels { key: "shadow" value: 5 } }
}
"""


def test_render_sets_labels_and_specific_policy_and_keeps_everything_else():
  existing = serving_config.parse(EXISTING)
  text = serving_config.to_text(serving_config.render(existing, M, '/unused', 42, 43))
  config = model_server_config_pb2.ModelServerConfig()
  text_format.Parse(text, config)                       # TF Serving's own proto accepts it
  other, ours = config.model_config_list.config
  assert other == existing.model_config_list.config[0]
  assert ours.base_path == '/models/big_tipper'         # the existing base path is kept
  assert dict(ours.version_labels) == {'stable': 42, 'canary': 43, 'shadow': 5}
  assert list(ours.model_version_policy.specific.versions) == [5, 42, 43]
  assert 'logging_config' not in text
  # Our own server accepts it too.
  from serving.config import models_from_proto
  assert [m.name for m in models_from_proto(config)] == ['other', 'big_tipper']


def test_render_creates_the_entry_and_drops_the_canary():
  config = serving_config.render(serving_config.parse(None), M, '/h/serving/big_tipper', 42, None)
  (entry,) = config.model_config_list.config
  assert (entry.name, entry.base_path, entry.model_platform) == (
      M, '/h/serving/big_tipper', 'tensorflow')
  assert dict(entry.version_labels) == {'stable': 42}
  assert list(entry.model_version_policy.specific.versions) == [42]
  again = serving_config.render(serving_config.parse(serving_config.to_text(config)), M, '/x',
                                42, None)
  assert again == config                                # idempotent


def test_logging_config_and_garbage_are_refused():
  with_logging = EXISTING.replace('name: "other"', 'name: "other" logging_config { '
                                  'sampling_config { sampling_rate: 1 } }')
  with pytest.raises(ServingConfigError, match='logging_config'):
    serving_config.render(serving_config.parse(with_logging), M, '/x', 1, None)
  with pytest.raises(ServingConfigError, match='not a valid'):
    serving_config.parse('model_config_list { config { nme: "x" } }')


def _writer(path, rounds):
  for i in range(rounds):
    versions = list(range(i, i + 200))          # a big file: a torn write would show
    config = model_server_config_pb2.ModelServerConfig()
    entry = config.model_config_list.config.add(name=M, base_path='/b')
    entry.model_version_policy.specific.versions.extend(versions)
    serving_config.write_atomically(path, serving_config.to_text(config))


def test_readers_never_see_a_partial_config(tmp_path):
  path = str(tmp_path / 'models.config')
  _writer(path, 1)
  writer = multiprocessing.get_context('spawn').Process(target=_writer, args=(path, 400))
  writer.start()
  reads = 0
  while writer.is_alive() or reads == 0:
    with open(path) as f:
      config = serving_config.parse(f.read())
    versions = list(config.model_config_list.config[0].model_version_policy.specific.versions)
    assert len(versions) == 200 and versions == list(range(versions[0], versions[0] + 200))
    reads += 1
  writer.join()
  assert writer.exitcode == 0 and reads > 10
  assert os.listdir(tmp_path) == ['models.config']      # no temporary file left behind


def test_lock_serializes_writers_and_names_the_holder(tmp_path):
  path = str(tmp_path / 'models.config')
  held, release = threading.Event(), threading.Event()

  def hold():
    with serving_config.exclusive_lock(path, 'promote big_tipper version 7 by alice'):
      held.set()
      release.wait(10)

  thread = threading.Thread(target=hold)
  thread.start()
  assert held.wait(10)
  started = time.monotonic()
  with pytest.raises(ConcurrentChangeError) as conflict:
    with serving_config.exclusive_lock(path, 'other', timeout_seconds=0.3):
      pass
  assert time.monotonic() - started >= 0.3
  assert 'promote big_tipper version 7 by alice' in str(conflict.value)
  assert 'nothing was changed' in str(conflict.value)
  release.set()
  thread.join()
  with serving_config.exclusive_lock(path, 'after', timeout_seconds=1):  # released: free again
    pass
