"""A team's Python worker and client, configured only by a temporal.toml profile that
`plinth profile` wrote: they talk to the Plinth proxy and never see ciphertext.

usage:
  proxy_client.py worker CONFIG PROFILE TASK_QUEUE        serve until stdin closes
  proxy_client.py run CONFIG PROFILE TASK_QUEUE WORKFLOW_ID TEXT
                                                           run Checkout, print its result
  proxy_client.py start CONFIG PROFILE TASK_QUEUE WORKFLOW_ID TEXT
                                                           start Parcel, do not wait
  proxy_client.py once CONFIG PROFILE -                    one list call, no retries: print
                                                           "ok" or "error CODE message"
  proxy_client.py drive CONFIG PROFILE TASK_QUEUE PREFIX LANES
                                                           run Checkouts and Orders, LANES at
                                                           a time, and list calls with no
                                                           retries, until stdin closes; print
                                                           "completed N failed M listed K
                                                           raced R unlisted U retried T"
                                                           (M: workflows; R: list calls that met
                                                           a GOAWAY on their way out; U: other
                                                           list calls that failed; T: workflow
                                                           calls repeated after their
                                                           connection was lost), then each
                                                           failure
Workflows: Parcel (waits for signal "deliver", query "status"), Checkout (one activity),
Order (items added by update "add", which refuses an empty one; paid by signal "pay"; then one
activity).
"""

import asyncio
import os
import sys
from pathlib import Path
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.api.workflowservice.v1 import ListWorkflowExecutionsRequest
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.envconfig import ClientConfigProfile
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker


@activity.defn
async def charge(order: str) -> str:
    return f"charged {order}"


@workflow.defn
class Checkout:
    @workflow.run
    async def run(self, order: str) -> str:
        return await workflow.execute_activity(
            charge, order, start_to_close_timeout=timedelta(seconds=30)
        )


@workflow.defn
class Parcel:
    def __init__(self) -> None:
        self.contents = ""
        self.delivered_to = ""

    @workflow.run
    async def run(self, contents: str) -> str:
        self.contents = contents
        await workflow.wait_condition(lambda: self.delivered_to != "")
        receipt = await workflow.execute_activity(
            charge, self.contents, start_to_close_timeout=timedelta(seconds=30)
        )
        return f"{receipt}, delivered to {self.delivered_to}"

    @workflow.signal
    def deliver(self, to: str) -> None:
        self.delivered_to = to

    @workflow.query
    def status(self) -> str:
        return f"holding {self.contents}"


@workflow.defn
class Order:
    def __init__(self) -> None:
        self.items: list[str] = []
        self.paid = False

    @workflow.run
    async def run(self, customer: str) -> str:
        await workflow.wait_condition(lambda: self.paid)
        return await workflow.execute_activity(
            charge,
            f"{customer}: {', '.join(self.items)}",
            start_to_close_timeout=timedelta(seconds=30),
        )

    @workflow.update
    def add(self, item: str) -> int:
        self.items.append(item)
        return len(self.items)

    @add.validator
    def check(self, item: str) -> None:
        if not item:
            raise ValueError("an empty item")

    @workflow.signal
    def pay(self) -> None:
        self.paid = True


async def connect(config: str, profile: str, lazy: bool) -> Client:
    loaded = ClientConfigProfile.load(profile, config_source=Path(config), disable_env=True)
    return await Client.connect(**loaded.to_client_connect_config(), lazy=lazy)


async def main() -> None:
    mode, config, profile, task_queue = sys.argv[1:5]
    client = await connect(config, profile, lazy=mode == "once")
    if mode == "worker":
        async with Worker(
            client,
            task_queue=task_queue,
            workflows=[Checkout, Order, Parcel],
            activities=[charge],
        ):
            print("polling", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    elif mode == "run":
        workflow_id, text = sys.argv[5:7]
        result = await client.execute_workflow(
            Checkout.run, text, id=workflow_id, task_queue=task_queue
        )
        print(result)
    elif mode == "start":
        workflow_id, text = sys.argv[5:7]
        await client.start_workflow(Parcel.run, text, id=workflow_id, task_queue=task_queue)
        print(workflow_id)
    elif mode == "once":
        request = ListWorkflowExecutionsRequest(namespace=client.namespace)
        try:
            await client.workflow_service.list_workflow_executions(
                request, retry=False, timeout=timedelta(seconds=60)
            )
            print("ok")
        except RPCError as e:
            print(f"error {e.status.name} {e.message}")
        except RuntimeError as e:
            # A lazy client's first call connects; GetSystemInfo's status comes back as text.
            code = "UNAVAILABLE" if "code: Unavailable" in str(e) else "CONNECT"
            print(f"error {code} {e}")
    elif mode == "drive":
        await drive(client, task_queue, sys.argv[5], int(sys.argv[6]))
    else:
        raise SystemExit(f"unknown mode {mode}")


async def drive(client: Client, task_queue: str, prefix: str, lanes: int) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.run_in_executor(None, lambda: (sys.stdin.read(), loop.call_soon_threadsafe(stop.set)))
    completed = 0
    retried = 0
    failures: list[str] = []

    async def again(call, done_when_gone: bool = False):
        """Calls `call` until it answers, as an application does when its connection is lost
        under a call; every call retried here is idempotent (the same workflow id, the same
        update id, a signal whose repeat changes nothing). With `done_when_gone`, a repeat
        that finds the workflow closed means the first call took effect. Any other failure is
        raised."""
        nonlocal retried
        repeated = False
        for _ in range(120):
            try:
                return await call()
            except RPCError as e:
                if repeated and done_when_gone and e.status == RPCStatusCode.NOT_FOUND:
                    return None
                lost = e.status == RPCStatusCode.UNAVAILABLE or (
                    e.status == RPCStatusCode.UNKNOWN and "transport error" in e.message
                )
                if not lost:
                    raise
                repeated = True
                retried += 1
                await asyncio.sleep(0.5)
        return await call()

    async def start(workflow, contents: str, order: str):
        """Starts the workflow once: a start repeated after it took effect finds it, running
        or closed, and a second run is never started."""

        async def once():
            try:
                return await client.start_workflow(
                    workflow,
                    contents,
                    id=order,
                    task_queue=task_queue,
                    id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                )
            except WorkflowAlreadyStartedError:
                return client.get_workflow_handle(order)

        return await again(once)

    async def result(handle) -> str:
        # A task or signal lost on the way would leave the workflow waiting: that fails it.
        return await asyncio.wait_for(again(handle.result), timeout=300)

    async def checkout_once(order: str, contents: str) -> tuple[str, str]:
        handle = await start(Checkout.run, contents, order)
        return await result(handle), f"charged {contents}"

    async def order_once(order: str, contents: str) -> tuple[str, str]:
        """An Order: an item added (an empty one refused), paid, then its result."""
        handle = await start(Order.run, contents, order)
        try:
            await again(lambda: handle.execute_update(Order.add, "", id="empty"))
            raise AssertionError("an empty item was added")
        except WorkflowUpdateFailedError:
            pass
        item = f"{order}-item"
        count = await again(lambda: handle.execute_update(Order.add, item, id="first"))
        if count != 1:
            raise AssertionError(f"the first item made {count}")
        await again(lambda: handle.signal(Order.pay), done_when_gone=True)
        return await result(handle), f"charged {contents}: {item}"

    async def lane(n: int) -> None:
        nonlocal completed
        i = 0
        while not stop.is_set():
            order = f"{prefix}-{n}-{i}"
            i += 1
            # The input differs from the id, which Temporal stores as it is.
            contents = f"{order}-contents"
            try:
                once = checkout_once if n % 2 == 0 else order_once
                result, expected = await once(order, contents)
            except Exception as e:  # every failure is reported, none ends the run
                failures.append(f"{order}: {e!r}")
                continue
            if result == expected:
                completed += 1
            else:
                failures.append(f"{order}: wrong result {result!r}")

    listed = 0
    raced = 0
    unlisted: list[str] = []

    async def unretried() -> None:
        nonlocal listed, raced
        request = ListWorkflowExecutionsRequest(namespace=client.namespace, page_size=1)
        while not stop.is_set():
            try:
                await client.workflow_service.list_workflow_executions(
                    request, retry=False, timeout=timedelta(seconds=10)
                )
                listed += 1
            except RPCError as e:
                # A call the client sent as its connection's GOAWAY arrived never reached the
                # server: the SDKs retry exactly this, and nothing else counts as a race.
                if e.status.name == "CANCELLED" and "operation was canceled" in e.message:
                    raced += 1
                else:
                    unlisted.append(f"list, not retried: {e.status.name} {e.message}")
            except Exception as e:  # a connection refused or reset, say
                unlisted.append(f"list, not retried: {e!r}")
            await asyncio.sleep(0.05)

    await asyncio.gather(unretried(), *(lane(n) for n in range(lanes)))
    print(
        f"completed {completed} failed {len(failures)} listed {listed} raced {raced} "
        f"unlisted {len(unlisted)} retried {retried}"
    )
    for failure in failures + unlisted:
        print(failure)


if __name__ == "__main__":
    asyncio.run(main())
    # The SDK's native runtime can abort during interpreter finalization; the work is done.
    sys.stdout.flush()
    os._exit(0)
