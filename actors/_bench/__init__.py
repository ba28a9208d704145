"""``writebehind bench``: the cache side by side with write-through and the machine's limits.

Importing this package is cheap: the measuring modules (and hdrhistogram, matplotlib) load only
when the command runs, so ``writebehind --help`` stays fast and works without the bench extra.
"""

from ._command import register

__all__ = ["register"]
