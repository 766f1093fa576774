"""Claims held while work runs: kept alive for their owner, waited on by
everyone else.

A consumer's run holds the claim of its (delivery, hub, consumer), and a
``send(idempotency_key=...)`` holds the claim of its key until the dispatch
is enqueued. Either renews its claim while it works, so that only the claim
of a process that died expires.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import BackendError
from .pubsub.backend import Backend, Claim

logger = logging.getLogger(__name__)


@contextmanager
def held(backend: Backend, key: str, token: str, timeout: float, needed: bool = True) -> Iterator[None]:
    """Keep ``token``'s claim on ``key`` alive while the block runs, extending
    it every third of ``timeout``, so that work slower than the timeout is
    not taken over by another owner.

    :param needed: ``False`` runs the block without touching any claim.
    """
    if not needed:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(timeout / 3):
            try:
                if not backend.extend(key, token, timeout):
                    logger.warning("The claim %s was lost while its work ran.", key)
                    return
            except BackendError as exc:
                logger.warning("Could not extend the claim %s (%s); trying again.", key, exc)

    thread = threading.Thread(target=beat, name=f"claim-{key}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()


def claim_or_wait(backend: Backend, key: str, token: str, timeout: float, wait: float) -> Claim:
    """Claim ``key`` for ``timeout`` seconds as ``token``; while another owner
    holds it, ask again until it is done or free, for up to ``wait`` seconds
    after it was first found held.

    A claim held by a process that died expires within ``timeout`` (its owner
    no longer renews it), so a ``wait`` of at least ``timeout`` outlasts it.

    :return: :attr:`Claim.ACQUIRED`, :attr:`Claim.DONE`, or
        :attr:`Claim.BUSY` when the other owner still holds it after ``wait``.
    :raises BackendError: the backend cannot be reached.
    """
    claimed = backend.claim(key, token, timeout)
    deadline = time.monotonic() + wait
    pause = 0.02
    while claimed is Claim.BUSY:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(pause, remaining))
        pause = min(2 * pause, 0.5)
        claimed = backend.claim(key, token, timeout)
    return claimed
