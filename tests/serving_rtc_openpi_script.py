"""Run by tests/test_serving_rtc_openpi.py with the .venv-openpi interpreter (real openpi-client
0.1.2): sends the requests of the input file in order over one WebsocketClientPolicy and writes
the metadata and every reply (or the client's error text) to the output file, packed with
openpi's own msgpack_numpy."""

import sys

from openpi_client import msgpack_numpy, websocket_client_policy

port, in_path, out_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
with open(in_path, "rb") as f:
    requests = msgpack_numpy.unpackb(f.read())["requests"]

client = websocket_client_policy.WebsocketClientPolicy(host="127.0.0.1", port=port)
record = {"metadata": client.get_server_metadata(), "replies": []}
for obs in requests:
    try:
        record["replies"].append(client.infer(obs))
    except RuntimeError as exc:  # openpi's client raises on a text frame
        record["replies"].append({"error": str(exc)})

with open(out_path, "wb") as f:
    f.write(msgpack_numpy.packb(record))
print("ok", len(record["replies"]))
