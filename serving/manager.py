"""Which versions of which models are loaded: TF Serving's file-system source + version manager.

The manager polls every model's base path, applies the version policy to the complete versions,
loads what is wanted before unloading what is not (availability-preserving swaps), keeps versions
that failed to load out of the policy (so the previous version keeps serving), assigns version
labels only to AVAILABLE versions, and remembers unloaded versions as END.

Unloading (UNLOADING, then END) releases the version in the manager's thread: `on_unload` lets the
server drop what it holds of it, then the manager drops its own reference, so the version's
TensorFlow objects are destroyed here (tens of milliseconds for a real model) and not on the
event loop by whichever request next touches the server's batchers (the first request after a
version swap used to pay for it).
"""
import dataclasses
import logging
import os
import threading

from serving import versions as versions_lib
from serving.config import ConfigError, ModelConfig, load_model_config_file
from serving.errors import Code, ServingError, failed_precondition, invalid_argument, not_found

log = logging.getLogger('serving.manager')

START, LOADING, AVAILABLE, UNLOADING, END = 'START', 'LOADING', 'AVAILABLE', 'UNLOADING', 'END'


@dataclasses.dataclass
class VersionStatus:
  """One version's lifecycle state and, when loading failed, why."""
  version: int
  state: str
  error_code: Code = Code.OK
  error_message: str = ''
  servable: object = None


@dataclasses.dataclass
class _Model:
  config: ModelConfig | None
  versions: dict[int, VersionStatus] = dataclasses.field(default_factory=dict)
  labels: dict[str, int] = dataclasses.field(default_factory=dict)
  failed: dict[int, tuple] = dataclasses.field(default_factory=dict)  # version -> fingerprint
  base_path_error: str | None = None  # Last problem reading the base path (logged once).


class ModelManager:
  """Thread-safe registry of loaded servables, reconciled with the config and the file system."""

  def __init__(self, loader, file_system_poll_seconds: float = 1.0, on_unload=None):
    """`loader(name, version, path)` returns a servable or raises; `on_unload(servable)`, called
    in the manager's thread, releases what others hold of a servable being unloaded."""
    self._loader = loader
    self._on_unload = on_unload
    self._poll_seconds = file_system_poll_seconds
    self._models: dict[str, _Model] = {}
    self._lock = threading.Lock()  # Guards _models' contents (fast lookups from request threads).
    self._reconcile_lock = threading.Lock()  # One reconcile/config change at a time.
    self._stop = threading.Event()
    self._thread = None
    self._config_file = None
    self._config_mtime = None
    self._config_poll_seconds = 0.0
    self._model_root = None

  # ---- configuration -------------------------------------------------------------------------

  def apply_config(self, models: list[ModelConfig]):
    """Replace the served models: load what the new config wants, then unload the rest.

    Raises ServingError(FAILED_PRECONDITION) when a label points at a version that is not
    AVAILABLE; everything else of the config is applied and that label keeps its old value.
    """
    with self._reconcile_lock:
      with self._lock:
        wanted = {m.name: m for m in models}
        for name, model in self._models.items():
          if name not in wanted:
            model.config = None
        for name, config in wanted.items():
          if name in self._models:
            self._models[name].config = config
          else:
            self._models[name] = _Model(config)
      errors = self._reconcile_locked()
    if errors:
      raise failed_precondition('; '.join(errors))

  def watch_config_file(self, path: str, poll_seconds: float, model_root: str | None):
    """Re-read `path` every `poll_seconds` (when it changed) from the polling thread."""
    self._config_file, self._config_poll_seconds, self._model_root = path, poll_seconds, model_root
    self._config_mtime = os.stat(path).st_mtime_ns

  def reload_config_file_if_changed(self):
    """Apply the watched config file if its modification time changed (bad files are logged)."""
    try:
      mtime = os.stat(self._config_file).st_mtime_ns
      if mtime == self._config_mtime:
        return
      self._config_mtime = mtime
      models = load_model_config_file(self._config_file, self._model_root)
    except (OSError, ConfigError) as e:
      log.error('Keeping the current models: cannot use %s: %s', self._config_file, e)
      return
    log.info('Model config %s changed: applying it', self._config_file)
    try:
      self.apply_config(models)
    except ServingError as e:
      log.error('Model config %s: %s', self._config_file, e.message)

  # ---- polling -------------------------------------------------------------------------------

  def reconcile(self) -> list[str]:
    """One pass over every model: load / unload to match policy and disk. Returns label errors."""
    with self._reconcile_lock:
      return self._reconcile_locked()

  def start(self):
    self._thread = threading.Thread(target=self._poll_loop, name='model-poller', daemon=True)
    self._thread.start()

  def stop(self):
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=30)

  def _poll_loop(self):
    waited_for_config = 0.0
    while not self._stop.wait(self._poll_seconds):
      waited_for_config += self._poll_seconds
      if self._config_file and self._config_poll_seconds > 0 and (
          waited_for_config >= self._config_poll_seconds):
        waited_for_config = 0.0
        self.reload_config_file_if_changed()
      errors = self.reconcile()
      for error in errors:
        log.warning('%s', error)

  def _reconcile_locked(self) -> list[str]:
    errors = []
    with self._lock:
      models = list(self._models.items())
    for name, model in models:
      self._reconcile_model(name, model)
      errors.extend(self._assign_labels(name, model))
    return errors

  def _reconcile_model(self, name: str, model: _Model):
    config = model.config
    on_disk: dict[int, str] = {}
    if config is not None:
      try:
        on_disk = versions_lib.list_versions(config.base_path)
        model.base_path_error = None
      except (FileNotFoundError, PermissionError) as e:
        if model.base_path_error != str(e):  # Once per new problem, not once per poll.
          log.error('Model %s: %s (still polling)', name, e)
          model.base_path_error = str(e)
        on_disk = {v.version: None for v in model.versions.values() if v.state == AVAILABLE}
      if not on_disk:
        log.debug('Model %s: no versions under %s yet', name, config.base_path)
    loaded = {v for v, s in model.versions.items() if s.state == AVAILABLE}
    while True:
      candidates = set()
      for version, path in on_disk.items():
        if path is None:  # Base path unreadable right now: keep what is loaded.
          candidates.add(version)
          continue
        if not versions_lib.is_complete(path):
          continue
        if model.failed.get(version) == versions_lib.fingerprint(path):
          continue
        candidates.add(version)
      wanted = config.policy.select(candidates) if config is not None else set()
      to_load = sorted(wanted - loaded, reverse=True)
      if not to_load:
        break
      version = to_load[0]
      if self._load(name, model, version, on_disk[version]):
        loaded.add(version)
    for version in sorted(loaded - wanted):
      self._unload(name, model, version)

  def _set_status(self, model: _Model, status: VersionStatus):
    with self._lock:
      model.versions[status.version] = status

  def _load(self, name: str, model: _Model, version: int, path: str) -> bool:
    self._set_status(model, VersionStatus(version, LOADING))
    log.info('Loading servable %s version %d from %s', name, version, path)
    try:
      servable = self._loader(name, version, path)
    except Exception as e:  # pylint: disable=broad-except  # Any load failure ends the version.
      message = f'Failed to load servable {name} version {version} from {path}: ' + (
          str(e).split('\n')[0] or type(e).__name__)
      log.error('%s', message)
      model.failed[version] = versions_lib.fingerprint(path)
      code = e.code if isinstance(e, ServingError) else Code.UNKNOWN  # e.g. a failed warm-up.
      self._set_status(model, VersionStatus(version, END, code, message))
      return False
    model.failed.pop(version, None)
    self._set_status(model, VersionStatus(version, AVAILABLE, servable=servable))
    log.info('Successfully loaded servable %s version %d', name, version)
    return True

  def _unload(self, name: str, model: _Model, version: int):
    servable = model.versions[version].servable
    self._set_status(model, VersionStatus(version, UNLOADING))
    # In-flight requests hold their own reference to the servable and finish normally.
    if self._on_unload is not None:
      self._on_unload(servable)
    del servable  # The last reference, usually: the version is destroyed here, in this thread.
    self._set_status(model, VersionStatus(version, END))
    log.info('Unloaded servable %s version %d', name, version)

  def _assign_labels(self, name: str, model: _Model) -> list[str]:
    wanted = model.config.label_map if model.config is not None else {}
    errors, labels = [], {}
    with self._lock:
      available = {v for v, s in model.versions.items() if s.state == AVAILABLE}
      for label, version in wanted.items():
        if version in available:
          labels[label] = version
        else:
          errors.append(f'Request to assign label to version {version} of model {name}, which is '
                        'not currently available for inference')
          if model.labels.get(label) in available:
            labels[label] = model.labels[label]
      model.labels = labels
    return errors

  # ---- lookups (called on every request) -------------------------------------------------------

  def resolve(self, name: str, version: int | None = None, label: str | None = None):
    """The servable a request addresses: a version, a label, or the newest AVAILABLE version."""
    with self._lock:
      model = self._models.get(name)
      if label is not None:
        if model is None or model.config is None:
          raise not_found(f'Servable not found for request: Latest({name})')
        if label not in model.labels:
          raise invalid_argument(f'Unrecognized servable version label: {label}')
        version = model.labels[label]
      if version is not None:
        status = model.versions.get(version) if model is not None else None
        if model is None or model.config is None or status is None or status.state != AVAILABLE:
          raise not_found(f'Servable not found for request: Specific({name}, {version})')
        return status.servable
      available = [] if model is None or model.config is None else [
          s for s in model.versions.values() if s.state == AVAILABLE]
      if not available:
        raise not_found(f'Servable not found for request: Latest({name})')
      return max(available, key=lambda s: s.version).servable

  def status(self, name: str, version: int | None = None) -> list[VersionStatus]:
    """Every version ever seen (newest first), or one version; NOT_FOUND like TF Serving."""
    with self._lock:
      model = self._models.get(name)
      statuses = dict(model.versions) if model is not None else {}
    if version is not None:
      if version not in statuses:
        raise not_found(f'Could not find version {version} of model {name}')
      return [statuses[version]]
    if not statuses:
      raise not_found(f'Could not find any versions of model {name}')
    return [statuses[v] for v in sorted(statuses, reverse=True)]

  def labels(self, name: str) -> dict[str, int]:
    with self._lock:
      model = self._models.get(name)
      return dict(model.labels) if model is not None else {}

  def available(self) -> dict[str, list[int]]:
    """{model: AVAILABLE versions, newest first}."""
    with self._lock:
      return {name: sorted((v for v, s in m.versions.items() if s.state == AVAILABLE),
                           reverse=True)
              for name, m in self._models.items() if m.config is not None}

  def is_current(self, servable) -> bool:
    """Whether `servable` is still the AVAILABLE instance of its version."""
    with self._lock:
      model = self._models.get(servable.name)
      status = model.versions.get(servable.version) if model is not None else None
      return status is not None and status.servable is servable
