"""The run store: one folder per run (folders, runfolder, storage) and index.sqlite, a cache
rebuilt from them (index); liveness marks runs whose front end died. Import from here."""

from __future__ import annotations

from profiler.store.folders import RunStore, data_home
from profiler.store.index import READ_TIMEOUT_S, IndexUnavailable
from profiler.store.runfolder import (
    CONFIG_LIMIT,
    META_FIELDS,
    META_LIMIT,
    META_RESERVE,
    RUN_STATUSES,
    STREAM_LINE_LIMIT,
    StoredRun,
    StreamWriter,
)
from profiler.store.storage import (
    STORE_FIX,
    SUMMARY_LIMIT,
    DamagedFile,
    StoreError,
    atomic_write,
    parse_json,
    read_object,
    write_failure,
)

__all__ = [
    "CONFIG_LIMIT", "META_FIELDS", "META_LIMIT", "META_RESERVE", "READ_TIMEOUT_S", "RUN_STATUSES",
    "STORE_FIX", "STREAM_LINE_LIMIT", "SUMMARY_LIMIT", "DamagedFile", "IndexUnavailable",
    "RunStore", "StoreError", "StoredRun", "StreamWriter", "atomic_write", "data_home",
    "parse_json", "read_object", "write_failure",
]
