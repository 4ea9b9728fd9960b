"""The Ray engine of a build: one Ray task per input file (or group of Parquet row groups).

Each task runs on a Ray worker, tokenizes its input and commits its part dataset under
``<out>/.parts`` exactly as the local engine does, so ``<out>`` and the inputs must be on storage
every node sees under the same paths. The driver collects the tasks' records and then merges the
parts into one manifest, as the local engine does: the dataset is the same byte for byte.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any

from tokenloom.build_parts import _run_task
from tokenloom.build_tokenizer import _Encoder

if TYPE_CHECKING:
    from tokenloom.build_inputs import _Settings, _Task
    from tokenloom.build_parts import _Progress

# Encoders of this worker process, by settings: a worker runs many tasks.
_ENCODERS: dict[str, _Encoder] = {}


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise ImportError(
            'engine="ray" needs Ray: pip install "tokenloom[ray]" (or pip install "ray>=2.9")'
        ) from e
    return ray


def _ray_task(task: _Task, settings: _Settings, part: str) -> dict[str, Any]:
    """Runs on a Ray worker: builds the part of one task and returns its record."""
    key = settings.key()
    encoder = _ENCODERS.get(key)
    if encoder is None:
        # The tokenizer's thread pool starts on first use: size it to the CPUs Ray gave this
        # task rather than to the whole node, which other tasks share.
        import ray

        context: Any = ray.get_runtime_context()
        cpus = context.get_assigned_resources().get("CPU", 1)
        os.environ.setdefault("RAYON_NUM_THREADS", str(max(1, int(cpus))))
        encoder = _ENCODERS[key] = _Encoder(settings.spec)
    return _run_task(task, settings, part, encoder, lambda d, t, b: None)


def run_on_ray(
    tasks: list[_Task],
    dirs: list[str],
    todo: list[int],
    records: list[dict[str, Any] | None],
    settings: _Settings,
    progress: _Progress,
) -> None:
    """Runs the tasks ``todo`` on Ray, filling ``records``. Joins the running Ray instance, or
    the cluster at ``RAY_ADDRESS``, or starts a local one; what it joined or started it leaves
    (or shuts down) at the end."""
    ray = _import_ray()
    started = False
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS") or None)
        started = True
    try:
        shared = ray.put(settings)  # the tokenizer travels once, not with every task
        remote = ray.remote(num_cpus=1)(_ray_task)
        running = {remote.remote(tasks[i], shared, dirs[i]): i for i in todo}
        waiting = list(running)
        try:
            while waiting:
                done, waiting = ray.wait(waiting, num_returns=1)
                for ref in done:
                    i = running[ref]
                    try:
                        rec: dict[str, Any] = ray.get(ref)
                    except ray.exceptions.RayTaskError as e:
                        cause = getattr(e, "cause", None)
                        if isinstance(cause, Exception):
                            raise cause from None
                        raise
                    records[i] = rec
                    progress.update(rec["num_docs"], rec["num_tokens"], tasks[i].bytes_share)
        except BaseException:
            # Finished parts stay committed for a resume; the others are stopped, and their
            # outcome collected so that Ray does not report it as unhandled.
            for ref in waiting:
                ray.cancel(ref)
            for ref in waiting:
                with contextlib.suppress(Exception):  # cancelled, or failed too: the first wins
                    ray.get(ref)
            raise
    finally:
        if started:
            ray.shutdown()
