"""A sweep's database: checked in a second before any work, opened safely by many workers at once, and ridden
through outages.

:func:`check_storage` refuses a malformed URL, a missing driver or an unreachable server in one line, before
Lightning is imported or a folder is made. :func:`open_storage` is Optuna's ``RDBStorage`` with heartbeats;
workers that open a fresh database at the same moment race to create its tables, and the loser retries.
:class:`RetryingStorage` retries every database call that lost its connection, with backoff, for a window
(minutes by default): a server restart or a network blip costs a pause, not the worker; past the window the
worker stops with one line and its finished trainings stay on disk to be read back.
"""

from __future__ import annotations

import contextlib
import functools
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import optuna
import sqlalchemy
from sqlalchemy import exc as sql_errors

T = TypeVar("T")

RETRIES = 3  # a trial whose worker died is queued again this many times
WINDOW = 300.0  # seconds a worker waits for its database to come back before it stops
DRIVERS = {  # the extra (or package) that installs a dialect's default driver
    "postgresql": "pip install 'lightning-proxy[postgres]'",
    "mysql": "pip install pymysql and write the URL as mysql+pymysql://...",
}


class StorageUnavailable(ConnectionError):
    """The sweep's database stayed unreachable for the whole retry window."""


def shown(url: str) -> str:
    """The URL without its password, as messages print it."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sql_errors.ArgumentError:
        return url


def check_storage(url: str, must_exist: bool = False, timeout: int = 5) -> None:
    """Refuse ``url`` in one line when it is malformed, names an unknown database or a driver that is not
    installed, or its server does not answer within ``timeout`` seconds; ``must_exist``: a SQLite file must be
    there already (a report reads a sweep, it does not start one)."""
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sql_errors.ArgumentError:
        raise ValueError(
            f"--storage {url} is not a database URL: write dialect://user@host:port/database, "
            "e.g. sqlite:///runs/sweep/sweep.db or postgresql://user@host/sweeps"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        _check_sqlite(url, parsed.database, must_exist)
        return
    try:
        parsed.get_dialect()
    except sql_errors.NoSuchModuleError:
        raise ValueError(
            f"--storage {shown(url)}: SQLAlchemy knows no database {parsed.drivername!r}; "
            "use sqlite:///, postgresql:// or mysql+pymysql://"
        ) from None
    try:
        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": timeout})
    except ImportError as error:
        backend = parsed.get_backend_name()
        how = DRIVERS.get(backend, f"install the {parsed.get_dialect().driver} package")
        raise ModuleNotFoundError(
            f"--storage {shown(url)} needs the {backend} driver ({error.name or error}), which is not installed: {how}"
        ) from None
    try:
        with engine.connect():
            pass
    except sql_errors.DBAPIError as error:
        raise ConnectionError(
            f"--storage {shown(url)}: cannot connect ({_first_line(error)}); start the database server or fix the URL"
        ) from None
    finally:
        engine.dispose()


def _check_sqlite(url: str, database: str | None, must_exist: bool) -> None:
    if not database or database == ":memory:":
        raise ValueError(f"--storage {url} keeps the sweep in memory, where no worker can share it: give a file")
    path = Path(database)
    if must_exist and not path.is_file():
        raise FileNotFoundError(f"--storage {url}: no database at {path} (is the path right?)")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"--storage {url}: the folder {path.parent} does not exist; create it or fix the path")


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _chain(error: BaseException, suppressed: bool = False) -> Iterator[BaseException]:
    """``error`` and what caused it, cause by cause (Optuna wraps SQLAlchemy's errors); ``suppressed``: also the
    context a ``raise ... from None`` hid."""
    seen: BaseException | None = error
    while seen is not None:
        yield seen
        hidden = seen.__suppress_context__ and not suppressed
        seen = seen.__cause__ or (None if hidden else seen.__context__)


def lost_connection(error: BaseException) -> bool:
    """Whether ``error`` is a database that went away, not bad data (nor a window already ridden out)."""
    if isinstance(error, StorageUnavailable):
        return False
    gone = (sql_errors.OperationalError, sql_errors.InterfaceError, sql_errors.DisconnectionError)
    invalidated = (e for e in _chain(error) if isinstance(e, sql_errors.DBAPIError) and e.connection_invalidated)
    return any(isinstance(e, gone) for e in _chain(error)) or next(invalidated, None) is not None


class _Outage:
    """One line when a worker loses its database and one when it is back, whichever thread notices."""

    def __init__(self) -> None:
        self.lock, self.since = threading.Lock(), None

    def lost(self, url: str, error: BaseException, window: float) -> float:
        with self.lock:
            if self.since is None:
                self.since = time.monotonic()
                print(
                    f"[sweep] lost the database {shown(url)} ({_first_line(error)}); retrying for up to {window:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
            return self.since

    def back(self, url: str) -> None:
        if self.since is None:
            return
        with self.lock:
            if self.since is not None:
                print(f"[sweep] the database is back after {time.monotonic() - self.since:.0f} s", flush=True)
                self.since = None


OUTAGE = _Outage()


def ride_out(call: Callable[[], T], url: str, window: float, cap: float = 1.0) -> T:
    """``call()``, retried with backoff (up to ``cap`` seconds apart) while its database is unreachable; past
    ``window`` seconds of outage, :class:`StorageUnavailable` with one line that says what to do."""
    delay = 0.1
    while True:
        try:
            result = call()
        except Exception as error:
            if not lost_connection(error):
                raise
            since = OUTAGE.lost(url, error, window)
            left = since + window - time.monotonic()
            if left <= 0:
                raise StorageUnavailable(
                    f"the sweep's database {shown(url)} was unreachable for {window:.0f} s ({_first_line(error)}): "
                    "start it again and rerun the same command; finished trainings are read back, not retrained"
                ) from None
            time.sleep(min(delay, left) * random.uniform(0.8, 1.2))
            delay = min(2 * delay, cap)
            continue
        OUTAGE.back(url)
        return result


class RetryingStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage whose every database call rides out an outage of up to ``window`` seconds.

    A call whose commit reached the server before the connection dropped is not done twice: a state change
    retried onto a trial already in that state counts as done.
    """

    def __init__(self, url: str, *, window: float = WINDOW, **kwargs: Any) -> None:
        self.window = window
        super().__init__(url, **kwargs)

    def set_trial_state_values(self, trial_id: int, state: Any, values: Any = None) -> bool:
        first = True

        def call() -> bool:
            nonlocal first
            try:
                return optuna.storages.RDBStorage.set_trial_state_values(self, trial_id, state, values)
            except optuna.exceptions.UpdateFinishedTrialError:
                if not first and optuna.storages.RDBStorage.get_trial(self, trial_id).state == state:
                    return True  # the first try's commit landed; its answer was lost
                raise
            finally:
                first = False

        return ride_out(call, self.url, self.window)

    def record_heartbeat(self, trial_id: int) -> None:
        """Beat, riding out an outage; past the window the beat is skipped, not the thread ended: it beats
        again when the database is back, and the worker's own next call says the database is gone."""
        with contextlib.suppress(StorageUnavailable):
            ride_out(lambda: optuna.storages.RDBStorage.record_heartbeat(self, trial_id), self.url, self.window)


def unavailable(error: BaseException) -> StorageUnavailable | None:
    """The :class:`StorageUnavailable` behind ``error``, if any (Optuna's own clean-up can hide it behind an
    error of its own when its database is gone)."""
    return next((e for e in _chain(error, suppressed=True) if isinstance(e, StorageUnavailable)), None)


_RETRIED = (  # every RDBStorage method that talks to the database (set_trial_state_values above)
    "create_new_study",
    "delete_study",
    "set_study_user_attr",
    "set_study_system_attr",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_directions",
    "get_study_user_attrs",
    "get_study_system_attrs",
    "get_all_studies",
    "create_new_trial",
    "set_trial_param",
    "get_trial_id_from_study_id_trial_number",
    "get_trial_number_from_id",
    "get_trial_param",
    "get_trial_params",
    "set_trial_intermediate_value",
    "set_trial_user_attr",
    "set_trial_system_attr",
    "get_trial_user_attrs",
    "get_trial_system_attrs",
    "get_trial",
    "get_all_trials",
    "get_n_trials",
    "get_best_trial",
)


def _retried(name: str) -> Callable[..., Any]:
    method = getattr(optuna.storages.RDBStorage, name)

    @functools.wraps(method)
    def call(self: RetryingStorage, *args: Any, **kwargs: Any) -> Any:
        return ride_out(lambda: method(self, *args, **kwargs), self.url, self.window)

    return call


for _name in _RETRIED:
    setattr(RetryingStorage, _name, _retried(_name))


def _schema_race(error: BaseException) -> bool:
    """Two workers creating a fresh database's tables at once: one's CREATE collides with the other's."""
    return any(isinstance(e, sql_errors.IntegrityError | sql_errors.ProgrammingError) for e in _chain(error))


def open_storage(url: str, heartbeat: int = 60, window: float = WINDOW) -> RetryingStorage:
    """Optuna's RDB storage with heartbeats: a trial silent for three of them, by the database's clock, is
    failed and queued again (``RetryHeartbeatStaleTrialCallback``), so a killed worker's configuration is
    retrained. Workers opening a fresh database at once all get through its schema creation."""
    import warnings

    sqlite = url.startswith("sqlite")
    engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 300}} if sqlite else {"pool_pre_ping": True}
    attempt = 0
    while True:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RetryingStorage(
                    url,
                    window=window,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat,
                    grace_period=3 * heartbeat,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=RETRIES),
                )
        except Exception as error:
            attempt += 1
            if attempt == 20 or not _schema_race(error):
                raise
            time.sleep(random.uniform(0.05, 0.3))
