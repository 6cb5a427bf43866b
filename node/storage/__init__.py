"""Where a node keeps what must survive a restart: its feeds in SQLite, its keys and settings
in a data directory.

``SqliteFeedStore`` is the on-disk ``gossip.FeedStore``: writes are buffered and made
durable by ``flush`` in one transaction (group commit), which is what lets the runtime
acknowledge many commits per disk sync. ``DataDir`` is the directory of one node: the
database, ``node.toml``, the device key, the enrollment token and the local API token, and
the lock that keeps a second node process off it.
"""

from ._datadir import DataDir, DataDirLocked
from ._sqlite import SqliteFeedStore

__all__ = ["SqliteFeedStore", "DataDir", "DataDirLocked"]
