"""SQL Server engine: backups the server writes, a repository catalog, restores and drills.

Pure parts (no server): ``msdb`` (the history query and its rows), ``planner``
(restore plans from those rows), ``tsql`` (statement builders), ``record`` and
``catalog`` (manifests in the repository, read back as msdb rows), ``retention``
(expire plans), ``paths`` and ``render``.  Parts that talk to a server, all through
``connection``: ``backup``, ``restore`` and ``drill``; ``health`` has one group of
checks that does.  ``expire`` and ``verify`` work on the repository alone.  ``ops``
(backup, restore, drill) and ``maintenance`` (expire, verify, check) hold the entry
points the CLI and flows call.
"""
