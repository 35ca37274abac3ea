"""Encrypts one payload exactly as the Temporal samples' Python codec does (encryption/codec.py):
AES-256-GCM over the serialized Payload, nonce(12) || ciphertext || tag, no associated data,
metadata encoding=binary/encrypted and encryption-key-id. Prints proto3 JSON Payloads.

usage: samples_encrypt.py KEY_FILE KEY_ID TEXT
"""

import json
import os
import sys

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads


def main() -> None:
    key_file, key_id, text = sys.argv[1:4]
    key = open(key_file, "rb").read()
    original = Payload(
        metadata={"encoding": b"json/plain"}, data=json.dumps(text).encode()
    )
    nonce = os.urandom(12)
    sealed = nonce + AESGCM(key).encrypt(nonce, original.SerializeToString(), None)
    encrypted = Payload(
        metadata={"encoding": b"binary/encrypted", "encryption-key-id": key_id.encode()},
        data=sealed,
    )
    print(json_format.MessageToJson(Payloads(payloads=[encrypted])))


if __name__ == "__main__":
    main()
