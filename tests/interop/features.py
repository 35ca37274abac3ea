"""An unmodified Python SDK worker and client, configured only by a temporal.toml profile
that `plinth profile` wrote, exercising SDK features through the Plinth proxy. Every input
and output carries MARKER; the caller then searches Temporal's database for it.

usage: features.py CONFIG PROFILE TASK_QUEUE MARKER OTHER_CONFIG NEXUS_ENDPOINT
OTHER_CONFIG is a profile for a second namespace, where a Nexus handler serves the
endpoint NEXUS_ENDPOINT (which targets that namespace and TASK_QUEUE).
Prints one JSON object: each scenario's outcome as the client saw it.
"""

import asyncio
import json
import time
import os
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import nexusrpc
import nexusrpc.handler
from temporalio import activity, workflow
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleSpec,
    ScheduleState,
    WithStartWorkflowOperation,
    WorkflowFailureError,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    RetryPolicy,
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
)
from temporalio.envconfig import ClientConfigProfile
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    NexusOperationError,
    CancelledError,
    TerminatedError,
)
from temporalio.worker import Worker


@activity.defn
async def explode(secret: str) -> str:
    activity.heartbeat(f"heartbeat {secret}")
    if activity.info().attempt < 2:
        raise ApplicationError(f"retry {secret}")
    raise ApplicationError(f"boom {secret}", {"detail": secret}, non_retryable=True)


@activity.defn
async def shout(text: str) -> str:
    return text.upper()


# The namespace's own search attribute; plaintext by design, so it carries no marker.
TAG = SearchAttributeKey.for_keyword("Tag")


@nexusrpc.service
class Greeting:
    greet: nexusrpc.Operation[str, str]
    refuse: nexusrpc.Operation[str, str]


@nexusrpc.handler.service_handler(service=Greeting)
class GreetingHandler:
    @nexusrpc.handler.sync_operation
    async def greet(self, ctx: nexusrpc.handler.StartOperationContext, name: str) -> str:
        return f"hello {name}"

    @nexusrpc.handler.sync_operation
    async def refuse(self, ctx: nexusrpc.handler.StartOperationContext, name: str) -> str:
        raise ApplicationError(f"refused {name}", non_retryable=True)


@workflow.defn
class Child:
    @workflow.run
    async def run(self, text: str) -> str:
        await workflow.sleep(timedelta(milliseconds=100))
        return f"child got {text}"


@workflow.defn
class Everything:
    """A local activity, a timer, a child, continue-as-new and a Nexus operation."""

    @workflow.run
    async def run(self, text: str, endpoint: str, rounds: int) -> list[str]:
        if rounds > 0:
            workflow.continue_as_new(args=[text, endpoint, rounds - 1])
        local = await workflow.execute_local_activity(
            shout, text, start_to_close_timeout=timedelta(seconds=10)
        )
        await workflow.sleep(timedelta(milliseconds=100))
        child = await workflow.execute_child_workflow(Child.run, text, id=f"{workflow.info().workflow_id}-child")
        nexus = workflow.create_nexus_client(service=Greeting, endpoint=endpoint)
        greeting = await nexus.execute_operation(Greeting.greet, text)
        return [local, child, greeting, str(workflow.info().continued_run_id is not None)]


@workflow.defn
class NexusFails:
    @workflow.run
    async def run(self, text: str, endpoint: str) -> str:
        nexus = workflow.create_nexus_client(service=Greeting, endpoint=endpoint)
        try:
            await nexus.execute_operation(
                Greeting.refuse, text, schedule_to_close_timeout=timedelta(seconds=30)
            )
            return "completed"
        except NexusOperationError as e:
            # The handler's error is at the end of the chain (Nexus's HandlerError has no
            # `cause`, only Python's own).
            error: BaseException = e
            while (inner := getattr(error, "cause", None) or error.__cause__) is not None:
                error = inner
            return getattr(error, "message", str(error))


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

    @workflow.signal
    def set_name(self, name: str) -> None:
        self.name = name

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


async def scenarios(client: Client, task_queue: str, marker: str, endpoint: str) -> dict:
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

    out["everything"] = await client.execute_workflow(
        Everything.run,
        args=[f"{marker}-everything", endpoint, 1],
        id=f"everything-{run}",
        task_queue=task_queue,
    )

    out["nexus_failure"] = await client.execute_workflow(
        NexusFails.run,
        args=[f"{marker}-nexus-failure", endpoint],
        id=f"nexus-fails-{run}",
        task_queue=task_queue,
    )

    signalled = await client.start_workflow(
        Counter.run,
        f"{marker}-sws-start",
        id=f"sws-{run}",
        task_queue=task_queue,
        start_signal="set_name",
        start_signal_args=[f"{marker}-sws"],
    )
    await signalled.signal(Counter.finish)
    out["signal_with_start"] = await signalled.result()

    for ending in ["cancel", "terminate"]:
        handle = await client.start_workflow(
            Counter.run, f"{marker}-{ending}", id=f"{ending}-{run}", task_queue=task_queue
        )
        if ending == "cancel":
            await handle.cancel()
        else:
            await handle.terminate(reason="ended by the test")
        try:
            await handle.result()
            out[ending] = "completed"
        except WorkflowFailureError as e:
            out[ending] = type(e.cause).__name__

    tag = f"tag-{run}"
    tagged = await client.start_workflow(
        Counter.run,
        f"{marker}-tagged",
        id=f"tagged-{run}",
        task_queue=task_queue,
        memo={"note": f"{marker}-memo"},
        search_attributes=TypedSearchAttributes([SearchAttributePair(TAG, tag)]),
    )
    query = f"Tag = '{tag}'"
    deadline = time.monotonic() + 30
    while (await client.count_workflows(query)).count != 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    listed = [w async for w in client.list_workflows(query)]
    out["listed"] = [w.id for w in listed] == [f"tagged-{run}"]
    out["memo"] = await (await tagged.describe()).memo_value("note")
    await tagged.signal(Counter.finish)
    await tagged.result()

    schedule = await client.create_schedule(
        f"schedule-{run}",
        Schedule(
            action=ScheduleActionStartWorkflow(
                Child.run, f"{marker}-schedule", id=f"scheduled-{run}", task_queue=task_queue
            ),
            spec=ScheduleSpec(),
            state=ScheduleState(paused=True),
        ),
    )
    described = await schedule.describe()
    action = described.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    # Described actions carry their arguments as payloads, opened by the proxy.
    out["schedule"] = [
        client.data_converter.payload_converter.from_payload(arg, str) for arg in action.args
    ]
    await schedule.trigger()
    scheduled = None
    while scheduled is None and time.monotonic() < deadline + 30:
        described = await schedule.describe()
        if described.info.recent_actions:
            scheduled = described.info.recent_actions[0].action.workflow_id
        else:
            await asyncio.sleep(0.2)
    out["scheduled"] = await client.get_workflow_handle(scheduled).result()
    await schedule.delete()
    return out


async def connect(config: str, profile: str) -> Client:
    loaded = ClientConfigProfile.load(profile, config_source=Path(config), disable_env=True)
    return await Client.connect(**loaded.to_client_connect_config())


async def main() -> None:
    config, profile, task_queue, marker, other_config, endpoint = sys.argv[1:7]
    client = await connect(config, profile)
    other = await connect(other_config, profile)
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[Counter, Failing, Child, Everything, NexusFails],
        activities=[explode, shout],
    ), Worker(other, task_queue=task_queue, nexus_service_handlers=[GreetingHandler()]):
        print(json.dumps(await scenarios(client, task_queue, marker, endpoint)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
    sys.stdout.flush()
    os._exit(0)
