"""The Ray engine of a build: one Ray task per input file (or group of Parquet row groups).

Each task runs on a Ray worker, tokenizes its input and commits its part dataset under
``<out>/.parts`` exactly as the local engine does, so ``<out>`` and the inputs must be on storage
every node sees under the same paths. The driver collects the tasks' records and then merges the
parts into one manifest, as the local engine does: the dataset is the same byte for byte.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tokenloom._build.parts import run_task
from tokenloom._build.tokenizer import Encoder
from tokenloom.ray_tasks import collect, limit_threads, session

if TYPE_CHECKING:
    from tokenloom._build.inputs import Settings, Task
    from tokenloom._build.parts import Progress

# Encoders of this worker process, by settings: a worker runs many tasks.
_ENCODERS: dict[str, Encoder] = {}


def _ray_task(task: Task, settings: Settings, part: str) -> dict[str, Any]:
    """Runs on a Ray worker: builds the part of one task and returns its record."""
    key = settings.key()
    encoder = _ENCODERS.get(key)
    if encoder is None:
        # The tokenizer's thread pool starts on first use.
        limit_threads()
        encoder = _ENCODERS[key] = Encoder(settings.spec)
    return run_task(task, settings, part, encoder, lambda d, t, b: None)


def run_on_ray(
    tasks: list[Task],
    dirs: list[str],
    todo: list[int],
    records: list[dict[str, Any] | None],
    settings: Settings,
    progress: Progress,
) -> None:
    """Runs the tasks ``todo`` on Ray, filling ``records``. Joins the running Ray instance, or
    the cluster at ``RAY_ADDRESS``, or starts a local one; what it joined or started it leaves
    (or shuts down) at the end. Finished parts stay committed for a resume when a task fails
    or Ctrl-C stops the run; the other tasks are cancelled."""
    with session() as ray:
        shared = ray.put(settings)  # the tokenizer travels once, not with every task
        remote = ray.remote(num_cpus=1)(_ray_task)

        def done(i: int, rec: dict[str, Any]) -> None:
            records[i] = rec
            progress.update(rec["num_docs"], rec["num_tokens"], tasks[i].bytes_share)

        collect(ray, {remote.remote(tasks[i], shared, dirs[i]): i for i in todo}, done)
