"""One deploy in progress: the step it is on, and a journal of what it created or changed, so that a failure can
undo exactly that.

Each step function of the AWS deployer takes a `DeployRun`. Before doing anything it names its step
(`with run.step("create the execution role")`); after creating a resource it calls `run.created(resource)`,
which also rewrites the state file at once, so even a deploy killed part-way leaves a record `votive destroy`
can clean up from; after changing something that existed before, it registers how to put it back with
`run.on_undo`. `run.undo()` then walks the journal newest first.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

from votive.client.aws_session import AwsClients, describe
from votive.deploy.aws.teardown import Resource, delete_resource, describe_resource


@dataclass
class _Entry:
    description: str  # what undoing it does, for messages
    undo: Callable[[], None]
    resource: Resource | None  # set when the entry deletes a resource this run created


@dataclass
class DeployRun:
    """The state of one deploy, shared by its steps.

    Args:
        clients: the AWS clients.
        record: the deployment record being built (saved by `save` after each creation).
        save: writes the record to the state file.
        ui: ConsoleUi or anything with `say` and `progress`.
        sleep: time.sleep, or a fake in tests.
        clock: time.monotonic, or a fake in tests.
    """

    clients: AwsClients
    record: dict
    save: Callable[[dict], None]
    ui: object
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    current_step: str | None = None
    _journal: list[_Entry] = field(default_factory=list)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Mark the step under way, so a failure inside can be reported as '<name> failed'."""
        self.current_step = name
        yield

    def created(self, resource: Resource) -> None:
        """Record a resource this deploy created: kept in the state file, deleted if the deploy fails."""
        if resource not in self.record["resources"]:  # recorded before, deleted by hand since, made again now
            self.record["resources"].append(resource)
        self.save(self.record)
        self._journal.append(_Entry(f"delete {describe_resource(resource)}",
                                    lambda: delete_resource(self.clients, resource), resource))

    def forget(self, resource: Resource) -> None:
        """Drop a resource from the record (after deleting it on purpose, e.g. a superseded layer version)."""
        self.record["resources"] = [r for r in self.record["resources"] if r != resource]
        self.save(self.record)

    def on_undo(self, description: str, undo: Callable[[], None]) -> None:
        """Register how to put back something this deploy changed."""
        self._journal.append(_Entry(description, undo, None))

    def undo(self) -> tuple[list[str], list[str]]:
        """Undo the journal newest first; returns (what was undone, what could not be with why)."""
        done, failed = [], []
        for entry in reversed(self._journal):
            try:
                entry.undo()
            except Exception as exc:
                failed.append(f"{entry.description} ({describe(exc)})")
                continue
            done.append(entry.description)
            if entry.resource is not None:
                self.record["resources"] = [r for r in self.record["resources"] if r != entry.resource]
        self._journal.clear()
        return done, failed

    def wait(self, what: str, ready: Callable[[], bool], timeout_s: float = 900.0) -> None:
        """Poll `ready` with backoff (1 s up to 10 s) until it is true or `timeout_s` has passed (DeployError)."""
        from votive.errors import DeployError

        deadline = self.clock() + timeout_s
        delay = 1.0
        while not ready():
            if self.clock() >= deadline:
                raise DeployError(f"{what}: still not ready after {timeout_s:g} s")
            self.sleep(delay)
            delay = min(delay * 2, 10.0)
