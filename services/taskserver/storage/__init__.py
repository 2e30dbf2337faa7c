"""Where the task server keeps its tasks: what the app uses, whichever backend holds them.

Today the one backend is the shared ``tasks.json`` (``file.py``, built from ``format.py``,
``journal.py``, ``lastid.py`` and ``disk.py``); ``model.py`` holds what any backend shares.
The app imports from here only, so another backend can sit beside the file one.
"""

from services.taskserver.storage.file import LOCK_TIMEOUT_SECONDS, TaskStore
from services.taskserver.storage.model import (
    KeyReused,
    Task,
    TaskNotFound,
    TasksFileError,
)

__all__ = [
    "LOCK_TIMEOUT_SECONDS",
    "KeyReused",
    "Task",
    "TaskNotFound",
    "TaskStore",
    "TasksFileError",
]
