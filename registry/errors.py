"""What the registry refuses, and why. Pure: no TFX, no ML Metadata."""


class RegistryError(Exception):
  """Base class of every error the registry reports to a person."""


class UnknownVersionError(RegistryError, LookupError):
  """The version (or `model:ID`) is not known to ML Metadata nor present in the serving dir."""


class RefusedError(RegistryError):
  """A transition the rules refuse. `forceable`: `--force` (with a reason) would override it."""

  def __init__(self, action: str, subject: str, reasons, forceable: bool, hint: str = ''):
    self.action, self.subject = action, subject
    self.reasons, self.forceable = tuple(reasons), forceable
    text = f'refusing to {action} {subject}: ' + '; '.join(self.reasons)
    if hint:
      text += f'. {hint}'
    elif forceable:
      text += ('. If you are sure, repeat with --force --reason "..." (the override is recorded '
               'in ML Metadata).')
    super().__init__(text)


class ConcurrentChangeError(RegistryError):
  """Another writer changed the registry or the serving config between read and write.

  Nothing was written by the command that gets this error.
  """


class ServingConfigError(RegistryError):
  """The existing `models.config` cannot be kept (unparsable, logging_config, custom config)."""


class WriteNotAllowedError(RegistryError):
  """ML Metadata refused the registry's write: the database user (or file) lacks a right.

  Nothing was written; reads (`loopline models list|show`, `loopline lineage`) need SELECT only.
  """

  def __init__(self, missing: str, detail: str):
    self.missing = missing
    super().__init__(
        f'ML Metadata refused the registry\'s write: the database user lacks the {missing} '
        f'privilege ({detail.strip()}). Reading needs SELECT only; promote, rollback and staging '
        'need SELECT, INSERT and UPDATE on the ML Metadata database (and CREATE on the first '
        'write). Nothing was written.')
