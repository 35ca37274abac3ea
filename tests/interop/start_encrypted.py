"""Starts a workflow with the Python SDK whose input is encrypted by Plinth's codec server
(a PayloadCodec that calls its /encode), so Temporal only ever receives ciphertext.

usage: start_encrypted.py TEMPORAL_ADDRESS NAMESPACE CODEC_URL WORKFLOW_ID TEXT
"""

import asyncio
import dataclasses
import json
import sys
import urllib.request

from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.client import Client
from temporalio.converter import DataConverter, PayloadCodec


class RemoteCodec(PayloadCodec):
    def __init__(self, url: str, namespace: str) -> None:
        self.url = url
        self.namespace = namespace

    def _call(self, operation: str, payloads):
        body = json_format.MessageToJson(Payloads(payloads=list(payloads))).encode()
        request = urllib.request.Request(
            f"{self.url}/{self.namespace}/{operation}",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request) as response:
            answer = json_format.Parse(response.read(), Payloads())
        return list(answer.payloads)

    async def encode(self, payloads):
        return self._call("encode", payloads)

    async def decode(self, payloads):
        return self._call("decode", payloads)


async def main() -> None:
    address, namespace, codec_url, workflow_id, text = sys.argv[1:6]
    converter = dataclasses.replace(
        DataConverter.default, payload_codec=RemoteCodec(codec_url, namespace)
    )
    client = await Client.connect(address, namespace=namespace, data_converter=converter)
    await client.start_workflow(
        "EncryptedInput", {"secret": text}, id=workflow_id, task_queue="ui-test"
    )
    print(json.dumps({"started": workflow_id}))


if __name__ == "__main__":
    asyncio.run(main())
