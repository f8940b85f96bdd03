#!/usr/bin/env python3
"""A third-party gRPC client (grpcio) for Levee's end-to-end tests.

Generates the levee.testing.v1.Flaky stubs (flaky_stubs.py), calls every
method through the given target with the given :authority, and prints the
outcomes as one JSON object on stdout.
Needs `pip install grpcio grpcio-tools`.
"""

import argparse
import json

import grpc

import flaky_stubs

TIMEOUT = 10  # seconds per call


def error(e):
    return {"code": e.code().name, "details": e.details()}


def run(target, authority, pb, pb_grpc):
    options = [("grpc.default_authority", authority), ("grpc.enable_http_proxy", 0)]
    out = {}
    with grpc.insecure_channel(target, options=options) as channel:
        stub = pb_grpc.FlakyStub(channel)

        reply, call = stub.Echo.with_call(pb.EchoRequest(message="hello"), timeout=TIMEOUT)
        metadata = dict(call.initial_metadata())
        out["unary"] = {"message": reply.message, "instance": reply.instance,
                        "instance_header": metadata.get("x-flaky-instance")}

        replies = stub.ServerStream(pb.StreamRequest(message="s", count=3), timeout=TIMEOUT)
        out["server_stream"] = [r.message for r in replies]

        messages = (pb.EchoRequest(message=m) for m in ["a", "b", "c"])
        reply = stub.ClientStream(messages, timeout=TIMEOUT)
        out["client_stream"] = {"message": reply.message, "count": reply.sequence}

        messages = (pb.EchoRequest(message=f"bidi {i}") for i in range(4))
        out["bidi_stream"] = [r.message for r in stub.BidiStream(messages, timeout=TIMEOUT)]

        try:
            stub.Echo(pb.EchoRequest(message="x"), timeout=TIMEOUT,
                      metadata=[("x-flaky-grpc-status", "14")])
            out["injected_error"] = None
        except grpc.RpcError as e:
            out["injected_error"] = error(e)

        received = []
        try:
            for r in stub.ServerStream(pb.StreamRequest(message="f", count=2, final_code=9),
                                       timeout=TIMEOUT):
                received.append(r.message)
            out["stream_error"] = {"received": received, "error": None}
        except grpc.RpcError as e:
            out["stream_error"] = {"received": received, "error": error(e)}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True, help="host:port to dial (the proxy)")
    parser.add_argument("--authority", required=True, help=":authority of every call")
    flaky_stubs.add_proto_root(parser)
    args = parser.parse_args()
    with flaky_stubs.stubs(args.proto_root) as (pb, pb_grpc):
        print(json.dumps(run(args.target, args.authority, pb, pb_grpc)))


if __name__ == "__main__":
    main()
