"""A grpcio client for scripts/goaway: `mixed`-like load (one RegisterOrder + OpenDispute
in ten operations, GetDispute otherwise) with bearer tokens, from CONCURRENCY threads, each
on a channel (an HTTP/2 connection) of its own, as loadgen's tasks are. No retry policy is
configured: grpcio's own transparent retry (gRFC A6, on by default) is all it does. Prints
one JSON object: calls, failed calls by RPC and code, and what was refused as expected.

Usage: grpcio_client.py STUBS_DIR ADDR SECONDS CONCURRENCY TOKENS_JSON
TOKENS_JSON: {"service": token, "buyers": [token, ...]} (buyer i is "py-b{i}")."""

import json
import sys
import threading
import time
import uuid
from collections import Counter

stubs, addr, seconds, concurrency, tokens_file = sys.argv[1:6]
sys.path.insert(0, stubs)
import grpc  # noqa: E402
from dispute.v1 import dispute_service_pb2 as pb  # noqa: E402
from dispute.v1 import dispute_service_pb2_grpc as rpc  # noqa: E402
from google.protobuf import timestamp_pb2  # noqa: E402

tokens = json.load(open(tokens_file))
seconds, concurrency = float(seconds), int(concurrency)
run = uuid.uuid4().hex[:8]
lock = threading.Lock()
calls, failed, refused = Counter(), Counter(), Counter()


def md(token):
    return (("authorization", f"Bearer {token}"),)


def worker(i):
    # A channel of its own (a local subchannel pool: its own connection), like loadgen's.
    channel = grpc.insecure_channel(addr, options=[("grpc.use_local_subchannel_pool", 1)])
    stub = rpc.DisputeServiceStub(channel)
    service, buyer = md(tokens["service"]), md(tokens["buyers"][i])
    disputes, n, deadline = [], 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        n += 1
        try:
            if n % 10 == 1 or not disputes:
                order = f"py-{run}-{i}-{n}"
                ends = timestamp_pb2.Timestamp(seconds=int(time.time()) + 30 * 86400)
                name = "RegisterOrder"
                stub.RegisterOrder(pb.RegisterOrderRequest(
                    order_id=order, buyer_id=f"py-b{i}", seller_id=f"py-s{i}",
                    amount=pb.Money(currency_code="USD", amount_minor=10_000),
                    protection_ends_at=ends, request_id=str(uuid.uuid4())),
                    metadata=service, timeout=10)
                with lock:
                    calls[name] += 1
                name = "OpenDispute"
                reply = stub.OpenDispute(pb.OpenDisputeRequest(
                    order_id=order, reason=pb.DISPUTE_REASON_NOT_AS_DESCRIBED,
                    remedy=pb.REMEDY_FULL_REFUND, description="goaway run",
                    request_id=str(uuid.uuid4())), metadata=buyer, timeout=10)
                disputes.append(reply.dispute.dispute_id)
            else:
                name = "GetDispute"
                stub.GetDispute(pb.GetDisputeRequest(dispute_id=disputes[n % len(disputes)]),
                                metadata=buyer, timeout=10)
            with lock:
                calls[name] += 1
        except grpc.RpcError as error:
            code = error.code().name
            with lock:
                calls[name] += 1
                # This load has no domain refusal: every non-OK status is a failure.
                failed[f"{name}:{code}"] += 1
                if sum(failed.values()) <= 5:
                    print(f"failed {name}: {code} {error.details()}", file=sys.stderr)
    channel.close()


threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
started = time.monotonic()
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({
    "client": f"grpcio {grpc.__version__}",
    "seconds": round(time.monotonic() - started, 1),
    "calls": sum(calls.values()),
    "by_rpc": dict(calls),
    "failed": sum(failed.values()),
    "failed_by_code": dict(failed),
}))
