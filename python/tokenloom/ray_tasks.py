"""What the Ray engines (``build`` and ``order`` with ``engine="ray"``) share: importing Ray
lazily with a clear error, joining the running Ray instance or the cluster at ``RAY_ADDRESS``
(else starting a local one), and collecting tasks as they finish, cancelling the others when
anything fails or Ctrl-C is pressed."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

K = TypeVar("K")


def import_ray() -> Any:
    """The ``ray`` module, or an ImportError naming the install."""
    try:
        import ray
    except ImportError as e:
        raise ImportError(
            'engine="ray" needs Ray: pip install "tokenloom[ray]" (or pip install "ray>=2.9")'
        ) from e
    return ray


@contextlib.contextmanager
def session() -> Iterator[Any]:
    """Ray, joined (the running instance, else ``RAY_ADDRESS``) or started here; what was
    started here is shut down at the end."""
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None)
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def limit_threads() -> None:
    """On a worker, before the core's thread pool starts: size it to the CPUs Ray gave this
    task rather than to the whole node, which other tasks share."""
    import ray

    context: Any = ray.get_runtime_context()
    cpus = context.get_assigned_resources().get("CPU", 1)
    os.environ["RAYON_NUM_THREADS"] = str(max(1, int(cpus)))


def collect(ray: Any, running: dict[Any, K], done: Callable[[K, Any], None]) -> None:
    """Calls ``done(key, result)`` for each task of ``running`` (object ref → key) as it
    finishes. A task's own exception is raised as it is; on any failure or Ctrl-C the tasks
    still running are cancelled and their outcome collected (so that Ray does not report it
    as unhandled) before the error goes on."""
    waiting = list(running)
    try:
        while waiting:
            finished, waiting = ray.wait(waiting, num_returns=1)
            for ref in finished:
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayTaskError as e:
                    cause = getattr(e, "cause", None)
                    if isinstance(cause, Exception):
                        raise cause from None
                    raise
                done(running[ref], result)
    except BaseException:
        cancel(ray, waiting)
        raise


def cancel(ray: Any, waiting: Any) -> None:
    """Cancels the tasks still ``waiting`` and waits until each has ended, so that a failed or
    interrupted run leaves none behind (a cancelled or failed one raises: the first error wins)."""
    for ref in waiting:
        ray.cancel(ref)
    for ref in waiting:
        with contextlib.suppress(Exception):
            ray.get(ref)
