"""An unmodified Python SDK worker and client, configured only by a temporal.toml profile
that `plinth profile` wrote, exercising SDK features through the Plinth proxy. Every input
and output carries MARKER; the caller then searches Temporal's database for it.

usage: features.py CONFIG PROFILE TASK_QUEUE MARKER
Prints one JSON object: each scenario's outcome as the client saw it.
"""

import asyncio
import json
import os
import sys
import uuid
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowFailureError,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import RetryPolicy, WorkflowIDConflictPolicy
from temporalio.envconfig import ClientConfigProfile
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.worker import Worker


@activity.defn
async def explode(secret: str) -> str:
    activity.heartbeat(f"heartbeat {secret}")
    if activity.info().attempt < 2:
        raise ApplicationError(f"retry {secret}")
    raise ApplicationError(f"boom {secret}", {"detail": secret}, non_retryable=True)


@workflow.defn
class Counter:
    def __init__(self) -> None:
        self.name = ""
        self.done = False

    @workflow.run
    async def run(self, name: str) -> str:
        self.name = self.name or name
        await workflow.wait_condition(lambda: self.done)
        return f"finished as {self.name}"

    @workflow.update
    def rename(self, name: str) -> str:
        self.name = name
        return f"renamed to {name}"

    @rename.validator
    def check_rename(self, name: str) -> None:
        if name.startswith("forbidden"):
            raise ApplicationError(f"refused {name}")

    @workflow.signal
    def finish(self) -> None:
        self.done = True

    @workflow.query
    def broken(self) -> str:
        raise ApplicationError(f"query failed for {self.name}")


@workflow.defn
class Failing:
    @workflow.run
    async def run(self, secret: str) -> str:
        try:
            await workflow.execute_activity(
                explode,
                secret,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100)),
            )
        except ActivityError as e:
            caught = e.cause.message if e.cause else ""
        raise ApplicationError(f"workflow failed after {caught}", non_retryable=True)


async def scenarios(client: Client, task_queue: str, marker: str) -> dict:
    out = {}
    run = uuid.uuid4().hex[:8]
    counter = await client.start_workflow(
        Counter.run, f"{marker}-start", id=f"counter-{run}", task_queue=task_queue
    )
    out["update"] = await counter.execute_update(Counter.rename, f"{marker}-update")
    try:
        await counter.execute_update(Counter.rename, f"forbidden {marker}-reject")
        out["rejected"] = "accepted"
    except WorkflowUpdateFailedError as e:
        out["rejected"] = e.cause.message if e.cause else str(e)
    try:
        await counter.query(Counter.broken)
        out["query"] = "answered"
    except WorkflowQueryFailedError as e:
        out["query"] = e.message
    await counter.signal(Counter.finish)
    out["result"] = await counter.result()

    start = WithStartWorkflowOperation(
        Counter.run,
        f"{marker}-uws-start",
        id=f"uws-{run}",
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        task_queue=task_queue,
    )
    out["update_with_start"] = await client.execute_update_with_start_workflow(
        Counter.rename, f"{marker}-uws", start_workflow_operation=start
    )
    handle = await start.workflow_handle()
    await handle.signal(Counter.finish)
    out["update_with_start_result"] = await handle.result()

    try:
        await client.execute_workflow(
            Failing.run, f"{marker}-failure", id=f"failing-{run}", task_queue=task_queue
        )
        out["failure"] = "completed"
    except WorkflowFailureError as e:
        out["failure"] = e.cause.message if e.cause else str(e)
    return out


async def main() -> None:
    config, profile, task_queue, marker = sys.argv[1:5]
    loaded = ClientConfigProfile.load(profile, config_source=Path(config), disable_env=True)
    client = await Client.connect(**loaded.to_client_connect_config())
    async with Worker(
        client, task_queue=task_queue, workflows=[Counter, Failing], activities=[explode]
    ):
        print(json.dumps(await scenarios(client, task_queue, marker)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
    sys.stdout.flush()
    os._exit(0)
