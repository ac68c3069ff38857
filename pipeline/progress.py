"""Progress of a LocalDagRunner run, one line per component, from TFX's own log records.

TFX logs at INFO through absl ("Component X is running.", "A cached execution N is used.",
"Component X is finished."). `show_progress()` sends all output to a log file and prints a
short line per component with its elapsed time, so a run is followed without reading Beam's output.
"""
import contextlib
import logging
import os
import re
import sys
import time
from typing import Iterator, TextIO

from absl import logging as absl_logging

_RUNNING = re.compile(r'^Component (\S+) is running\.$')
_FINISHED = re.compile(r'^Component (\S+) is finished\.$')
_CACHED = re.compile(r'^A cached execution \d+ is used\.$')


class _ComponentProgress(logging.Handler):

  def __init__(self, out: TextIO):
    super().__init__(level=logging.INFO)
    self._out = out
    self._started = time.monotonic()
    self._component_started = self._started
    self._cached = False

  def emit(self, record: logging.LogRecord) -> None:
    message = record.getMessage()
    if match := _RUNNING.match(message):
      self._component_started = time.monotonic()
      self._cached = False
      self._write(f'{match.group(1):<34} running')
    elif _CACHED.match(message):
      self._cached = True
    elif match := _FINISHED.match(message):
      took = time.monotonic() - self._component_started
      self._write(f'{match.group(1):<34} {"cached" if self._cached else "done"} ({took:.1f}s)')

  def _write(self, text: str) -> None:
    self._out.write(f'[{time.monotonic() - self._started:7.1f}s] {text}\n')
    self._out.flush()


@contextlib.contextmanager
def show_progress(log_file: str, out_fd: int = 1) -> Iterator[None]:
  """Within the block, everything written to stdout/stderr (TFX, Beam workers, TensorFlow's C++
  logs) goes to `log_file`; one progress line per component goes to the original `out_fd`."""
  os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
  sys.stdout.flush()
  sys.stderr.flush()
  saved_stdout, saved_stderr = os.dup(1), os.dup(2)
  log_fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
  progress_out = os.fdopen(os.dup(saved_stdout if out_fd == 1 else out_fd), 'w')
  os.dup2(log_fd, 1)
  os.dup2(log_fd, 2)
  absl_logger = absl_logging.get_absl_logger()
  saved_level = absl_logger.level
  progress = _ComponentProgress(progress_out)
  file_handler = logging.StreamHandler(sys.stderr)
  file_handler.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(name)s: %(message)s'))
  absl_logging.set_verbosity(absl_logging.INFO)
  absl_logger.addHandler(progress)
  logging.getLogger().addHandler(file_handler)
  try:
    yield
  finally:
    sys.stdout.flush()
    sys.stderr.flush()
    logging.getLogger().removeHandler(file_handler)
    absl_logger.removeHandler(progress)
    absl_logger.setLevel(saved_level)
    os.dup2(saved_stdout, 1)
    os.dup2(saved_stderr, 2)
    for fd in (saved_stdout, saved_stderr, log_fd):
      os.close(fd)
    progress_out.close()
