"""Request-log files: TFRecord framing, names, rotation, retention and tolerant reading.

A log file is a TFRecord file (each record: uint64 length, masked CRC32C of the length, data,
masked CRC32C of the data) of serialized PredictionLog protos. It is written as a hidden
`.prediction_log-...tfrecord.tmp` and renamed to `prediction_log-<UTC time>-<seq>.tfrecord` when
complete, so a reader that lists `prediction_log-*.tfrecord` only ever sees whole files.
"""
import dataclasses
import functools
import os
import re
import struct
import time

import google_crc32c

FILE_PREFIX = 'prediction_log-'
FILE_SUFFIX = '.tfrecord'
TEMP_SUFFIX = '.tmp'
_FINAL_NAME = re.compile(r'prediction_log-\d{8}T\d{6}Z-\d{6}-[0-9a-f]{6}\.tfrecord')
_MASK_DELTA = 0xa282ead8


def masked_crc(data: bytes) -> int:
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xffffffff


_UINT32 = struct.Struct('<I')


@functools.lru_cache(maxsize=4096)
def _record_header(size: int) -> bytes:
  length = struct.pack('<Q', size)
  return length + _UINT32.pack(masked_crc(length))


def frame_record(data: bytes) -> bytes:
  """One TFRecord record."""
  return _record_header(len(data)) + data + _UINT32.pack(masked_crc(data))


def final_name(created_at: float, sequence: int, writer_id: str) -> str:
  """`prediction_log-20260127T101500Z-000003-ab12cd.tfrecord`: sorts by creation time."""
  stamp = time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(created_at))
  return f'{FILE_PREFIX}{stamp}-{sequence:06d}-{writer_id}{FILE_SUFFIX}'


def temp_name(final: str) -> str:
  return f'.{final}{TEMP_SUFFIX}'


def final_name_of_temp(temp: str) -> str | None:
  """The final name a leftover temporary file was meant to get, or None if it is not one of ours."""
  if temp.startswith('.') and temp.endswith(TEMP_SUFFIX):
    name = temp[1:-len(TEMP_SUFFIX)]
    if _FINAL_NAME.fullmatch(name):
      return name
  return None


def is_log_file(name: str) -> bool:
  return bool(_FINAL_NAME.fullmatch(name))


def should_rotate(size: int, opened_at: float, now: float, max_bytes: int,
                  max_age_seconds: float) -> bool:
  """Whether the open file is done: big enough, or old enough and not empty."""
  return size >= max_bytes or (size > 0 and now - opened_at >= max_age_seconds)


@dataclasses.dataclass(frozen=True)
class LogFile:
  name: str
  size: int
  mtime: float


def files_to_delete(files: list[LogFile], now: float, max_age_seconds: float,
                    max_total_bytes: int) -> list[LogFile]:
  """Retention: every file older than the age limit, then the oldest until the total fits."""
  ordered = sorted(files, key=lambda f: f.name)
  doomed = [f for f in ordered if now - f.mtime > max_age_seconds]
  kept = [f for f in ordered if f not in doomed]
  total = sum(f.size for f in kept)
  while kept and total > max_total_bytes:
    oldest = kept.pop(0)
    doomed.append(oldest)
    total -= oldest.size
  return doomed


def list_log_files(directory: str) -> list[LogFile]:
  files = []
  for entry in os.scandir(directory):
    if is_log_file(entry.name) and entry.is_file():
      stat = entry.stat()
      files.append(LogFile(entry.name, stat.st_size, stat.st_mtime))
  return sorted(files, key=lambda f: f.name)


@dataclasses.dataclass
class ReadResult:
  records: list[bytes]
  complete_bytes: int  # Offset just after the last whole, checksum-valid record.
  truncated: bool  # Whether anything followed that offset.


def read_records(path: str) -> ReadResult:
  """Every whole record of a TFRecord file, stopping (not failing) at a truncated or corrupt tail."""
  with open(path, 'rb') as f:
    data = f.read()
  records, offset = [], 0
  while offset + 12 <= len(data):
    header = data[offset:offset + 8]
    (length,) = struct.unpack('<Q', header)
    (length_crc,) = struct.unpack('<I', data[offset + 8:offset + 12])
    end = offset + 12 + length + 4
    if length_crc != masked_crc(header) or end > len(data):
      break
    payload = data[offset + 12:offset + 12 + length]
    (data_crc,) = struct.unpack('<I', data[end - 4:end])
    if data_crc != masked_crc(payload):
      break
    records.append(payload)
    offset = end
  return ReadResult(records, offset, offset != len(data))


def read_log_directory(directory: str) -> list[bytes]:
  """All records of all finalized log files, oldest file first (tolerates a truncated last file)."""
  records = []
  for log_file in list_log_files(directory):
    records.extend(read_records(os.path.join(directory, log_file.name)).records)
  return records
