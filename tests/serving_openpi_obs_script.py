"""Run by tests/test_policy_observations.py with the .venv-openpi interpreter (real openpi-client).

Reads a list of observations (packed with openpi's msgpack_numpy by the test), sends each with
``WebsocketClientPolicy.infer`` unchanged, and writes the server metadata and, per observation,
the reply or the error text the client raised, packed with openpi's own msgpack_numpy.
"""

import sys

from openpi_client import msgpack_numpy, websocket_client_policy

port, in_path, out_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
with open(in_path, "rb") as f:
    observations = msgpack_numpy.unpackb(f.read())

client = websocket_client_policy.WebsocketClientPolicy(host="127.0.0.1", port=port)
record = {"metadata": client.get_server_metadata(), "replies": []}
for obs in observations:
    try:
        record["replies"].append({"ok": client.infer(obs)})
    except RuntimeError as exc:  # openpi's client raises on the server's text error frame
        record["replies"].append({"error": str(exc)})

with open(out_path, "wb") as f:
    f.write(msgpack_numpy.packb(record))
print("ok", len(record["replies"]))
