"""Connections to ML Metadata: from a PipelineConfig (SQLite in the home, or MySQL) or from a URL.

Readers never write: `open_store` never upgrades the schema (`enable_upgrade_migration=False`), a
reader's SQLite connection is READONLY, and nothing here registers a type (the registry and the
lineage walk look types up and treat a missing one as "nothing of that kind yet"), so every read
works with a database user that has only SELECT. Only writes (pipeline runs, promote, rollback)
need more; `write_denied` tells which right a refused write lacked.
"""
import dataclasses
import os
import re
from typing import Optional
from urllib import parse

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

SQLITE_SCHEME = 'sqlite://'
GRPC_SCHEME = 'grpc://'
MYSQL_SCHEME = 'mysql://'


# (`duplicates` pairs this with BaselineManifest: two frozen dataclasses of fields, no shared logic.)
@dataclasses.dataclass(frozen=True)
class MySQLConnection:
  """ML Metadata on MySQL (as in a Kubeflow cluster)."""
  host: str
  port: int
  database: str
  username: str
  password: str = ''


def parse_mysql_url(url: str) -> MySQLConnection:
  """'mysql://user[:password]@host[:port]/database' -> MySQLConnection (port 3306 by default).

  ValueError names what is wrong with the URL."""
  parts = parse.urlsplit(url)
  if parts.scheme != 'mysql':
    raise ValueError(f'MySQL URL {url!r} must start with {MYSQL_SCHEME}')
  try:
    port = parts.port or 3306
  except ValueError as e:
    raise ValueError(f'MySQL URL {url!r} has a bad port: {e}') from e
  database = parts.path.lstrip('/')
  if not parts.hostname:
    raise ValueError(f'MySQL URL {url!r} has no host')
  if not parts.username:
    raise ValueError(f'MySQL URL {url!r} has no user (mysql://USER[:PASSWORD]@HOST/DB)')
  if not database or '/' in database:
    raise ValueError(f'MySQL URL {url!r} must name one database (mysql://USER@HOST/DB)')
  if parts.query or parts.fragment:
    raise ValueError(f'MySQL URL {url!r}: options (?...) are not supported')
  return MySQLConnection(host=parts.hostname, port=port, database=database,
                         username=parse.unquote(parts.username),
                         password=parse.unquote(parts.password or ''))


def mysql_url(mysql: MySQLConnection) -> str:
  """The URL of a MySQLConnection (the inverse of `parse_mysql_url`)."""
  password = f':{parse.quote(mysql.password, safe="")}' if mysql.password else ''
  return (f'{MYSQL_SCHEME}{parse.quote(mysql.username, safe="")}{password}@{mysql.host}:'
          f'{mysql.port}/{mysql.database}')


def _mysql_connection(mysql: MySQLConnection,
                      create: bool = True) -> metadata_store_pb2.ConnectionConfig:
  """`create`: MLMD's connect runs `CREATE DATABASE IF NOT EXISTS` (a pipeline run's first
  write); readers and the registry, which only add to an existing store, must not even ask."""
  connection = metadata_store_pb2.ConnectionConfig()
  connection.mysql.skip_db_creation = not create
  connection.mysql.host = mysql.host
  connection.mysql.port = mysql.port
  connection.mysql.database = mysql.database
  connection.mysql.user = mysql.username
  connection.mysql.password = mysql.password
  return connection


def connection_config(config, read_only: bool = False,
                      create: bool = True) -> metadata_store_pb2.ConnectionConfig:
  """The MLMD connection of a PipelineConfig: MySQL when configured, else SQLite in the home.

  `read_only`: an existing SQLite file is opened READONLY (a home without one yet gets an empty
  store, as before: there is nothing to protect), and a MySQL database is not created;
  `create=False`: a MySQL database is not created either (the registry's writes)."""
  if config.mysql:
    return _mysql_connection(config.mysql, create and not read_only)
  connection = metadata_store_pb2.ConnectionConfig()
  connection.sqlite.filename_uri = config.metadata_path
  if read_only and os.path.isfile(config.metadata_path):
    connection.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return connection
  os.makedirs(os.path.dirname(config.metadata_path), exist_ok=True)
  connection.sqlite.connection_mode = (
      metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE)
  return connection


def metadata_url(config) -> str:
  """Where a pipeline's own tasks reach ML Metadata (the TrainingBaselineResolver's store).

  `config.metadata_service_url` when set (in a cluster: its ML Metadata gRPC service), else the
  pipeline's store: `mysql://...` or `sqlite:///<home>/metadata/metadata.sqlite`.
  """
  if config.metadata_service_url:
    return config.metadata_service_url
  if config.mysql:
    return mysql_url(config.mysql)
  return SQLITE_SCHEME + config.metadata_path


def connection_from_url(url: str):
  """A read-only MLMD connection from a URL: `grpc://HOST:PORT` (an ML Metadata gRPC service, as
  in a Kubeflow cluster), `mysql://USER[:PASSWORD]@HOST[:PORT]/DB`, or `sqlite:///ABSOLUTE/PATH`
  (the file must exist: a typo must not create an empty store). ValueError names what is wrong.
  """
  if url.startswith(GRPC_SCHEME):
    host, sep, port = url[len(GRPC_SCHEME):].rstrip('/').rpartition(':')
    if not sep or not host or not port.isdigit():
      raise ValueError(f'ML Metadata URL {url!r} must look like grpc://HOST:PORT')
    return metadata_store_pb2.MetadataStoreClientConfig(host=host, port=int(port))
  if url.startswith(MYSQL_SCHEME):
    return _mysql_connection(parse_mysql_url(url), create=False)
  if url.startswith(SQLITE_SCHEME):
    path = url[len(SQLITE_SCHEME):]
    if not os.path.isabs(path):
      raise ValueError(f'ML Metadata URL {url!r}: the SQLite path must be absolute '
                       f'(sqlite:///abs/path)')
    if not os.path.isfile(path):
      raise FileNotFoundError(f'ML Metadata URL {url!r}: no SQLite file at {path}')
    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = path
    connection.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return connection
  raise ValueError(f'ML Metadata URL {url!r}: use grpc://HOST:PORT, mysql://USER@HOST/DB or '
                   f'sqlite:///PATH')


def open_store(connection) -> metadata_store.MetadataStore:
  """A store on a connection; never migrates the schema (a reader must not write)."""
  return metadata_store.MetadataStore(connection, enable_upgrade_migration=False)


def open_pipeline_store(config, read_only: bool = False,
                        create: bool = True) -> metadata_store.MetadataStore:
  """The MLMD store of a PipelineConfig (`read_only`, `create`: see `connection_config`)."""
  return open_store(connection_config(config, read_only, create))


_DENIED = re.compile(r'\b([A-Z]+(?: [A-Z]+)*) command denied to user', re.IGNORECASE)


def write_denied(error: Exception) -> Optional[str]:
  """The SQL right a refused write lacked ('INSERT', 'UPDATE', ...), None for other errors.

  MySQL/MariaDB answer `INSERT command denied to user 'u'@'host' for table 't'`; a READONLY
  SQLite file answers `attempt to write a readonly database`."""
  text = str(error)
  found = _DENIED.search(text)
  if found:
    return found.group(1).upper()
  if 'readonly database' in text:
    return 'write access to the SQLite file'
  return None
