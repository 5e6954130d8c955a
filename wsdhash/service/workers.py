"""The searches in flight: a fixed pool of worker threads behind a queue of bounded length.

A search (model call and index search) runs in one of `workers` threads; a request that
finds them all busy waits in a queue of at most `max_queue` searches, and one that finds
the queue full is refused at once (`Overloaded`: the service answers 503 with
`Retry-After`). So the threads never grow, and the work waiting is bounded.

Every job carries its request's deadline and a cancel flag. A request that times out
cancels its job: a job still queued is taken out of the queue (it never starts), a job
whose deadline has passed when a worker takes it is dropped, and a running job checks
`Job.stopped` between its stages (the search stops before its next stage; the model call
itself, one call for all of a request's images, cannot be interrupted). A burst of
timed-out requests therefore leaves at most `workers` model calls behind it, not the
whole burst.
"""

from __future__ import annotations

import asyncio
import collections
import math
import threading
import time

import anyio


class Overloaded(Exception):
    """Every worker busy and the queue full: `retry_after_s` is a guess at when a slot frees."""

    def __init__(self, queued: int, retry_after_s: int):
        super().__init__(f"{queued} searches queued")
        self.queued = queued
        self.retry_after_s = retry_after_s


class Stopped(Exception):
    """Raised inside a job whose request was cancelled or is past its deadline."""


class Job:
    """One search: its function, deadline and cancel flag, and where its answer goes."""

    def __init__(self, function, args, deadline: float, loop, future):
        self.function, self.args, self.deadline = function, args, deadline
        self._loop, self._future = loop, future
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def stopped(self) -> bool:
        """True once the request gave up on this job or its deadline passed."""
        return self._cancelled.is_set() or time.monotonic() > self.deadline

    def check(self) -> None:
        """Raises `Stopped` when the job should not go on (call between stages)."""
        if self.stopped:
            raise Stopped()

    def settle(self, result=None, error: BaseException | None = None) -> None:
        """Hands the answer to the waiting request (nothing when it gave up)."""

        def deliver():
            if self._future.done():  # cancelled: the request timed out
                return
            if error is not None:
                self._future.set_exception(error)
            else:
                self._future.set_result(result)

        try:
            self._loop.call_soon_threadsafe(deliver)
        except RuntimeError:  # the request's event loop is closed
            pass


class WorkerPool:
    """`workers` threads taking jobs from a queue of at most `max_queue` (module doc).

    `on_drop(reason)` is called for every job that does not run to its end: "expired"
    (its deadline passed in the queue), "cancelled" (its request gave up while it was
    queued) or "stopped" (it stopped between stages).
    """

    def __init__(self, workers: int, max_queue: int, on_drop=None, name: str = "wsdhash-search"):
        if workers < 1 or max_queue < 1:
            raise ValueError(f"workers and max_queue must be >= 1; got {workers}, {max_queue}.")
        self.workers, self.max_queue, self.name = workers, max_queue, name
        self._on_drop = on_drop or (lambda reason: None)
        self._queue: collections.deque[Job] = collections.deque()
        self._ready = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self.busy = 0
        self._job_seconds = 0.0  # a running mean of a job's time, for Retry-After

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def threads(self) -> int:
        return sum(thread.is_alive() for thread in self._threads)

    def _start(self) -> None:
        # Lazily, on the first job: an application that never searches starts no thread.
        while len(self._threads) < self.workers:
            thread = threading.Thread(
                target=self._work, name=f"{self.name}-{len(self._threads)}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def retry_after_s(self) -> int:
        """Seconds until the queue ahead of a new job has probably drained (1 to 60)."""
        waiting = (self.queued + self.busy) / self.workers
        return int(min(60, max(1, math.ceil(waiting * self._job_seconds))))

    def submit(self, function, args, deadline: float, loop, future) -> Job:
        """Queues `function(job, *args)`; raises `Overloaded` when the queue is full."""
        job = Job(function, args, deadline, loop, future)
        with self._ready:
            if self._closed:
                raise RuntimeError("the worker pool is closed")
            if len(self._queue) >= self.max_queue:
                raise Overloaded(len(self._queue), self.retry_after_s())
            self._start()
            self._queue.append(job)
            self._ready.notify()
        return job

    def withdraw(self, job: Job) -> None:
        """Cancels a job, and takes it out of the queue when it has not started."""
        job.cancel()
        with self._ready:
            try:
                self._queue.remove(job)
            except ValueError:
                return  # running or done
        self._on_drop("cancelled")

    async def run(self, function, *args, timeout: float):
        """`function(job, *args)` in a worker; raises TimeoutError after `timeout` seconds
        (the job is then withdrawn or told to stop), `Overloaded` when the queue is full."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        job = self.submit(function, args, time.monotonic() + timeout, loop, future)
        try:
            with anyio.fail_after(timeout):
                return await future
        finally:
            self.withdraw(job)  # a no-op for a finished job

    def _next(self) -> Job | None:
        with self._ready:
            while not self._queue and not self._closed:
                self._ready.wait()
            if self._closed:
                return None
            self.busy += 1
            return self._queue.popleft()

    def _work(self) -> None:
        while True:
            job = self._next()
            if job is None:
                return
            try:
                if job.stopped:
                    self._on_drop("expired")
                    job.settle(error=TimeoutError())
                    continue
                started = time.monotonic()
                try:
                    result = job.function(job, *job.args)
                except Stopped:
                    self._on_drop("stopped")
                    job.settle(error=TimeoutError())
                    continue
                except Exception as error:  # noqa: BLE001 (handed to the request)
                    job.settle(error=error)
                    continue
                seconds = time.monotonic() - started
                self._job_seconds += (seconds - self._job_seconds) * 0.2
                job.settle(result)
            finally:
                with self._ready:
                    self.busy -= 1

    def close(self) -> None:
        """Stops the threads once their current job ends; queued jobs are cancelled."""
        with self._ready:
            self._closed = True
            dropped = list(self._queue)
            self._queue.clear()
            self._ready.notify_all()
        for job in dropped:
            job.cancel()
            job.settle(error=TimeoutError())
