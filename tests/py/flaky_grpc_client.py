#!/usr/bin/env python3
"""A third-party gRPC client (grpcio) for Levee's end-to-end tests.

Generates the levee.testing.v1.Flaky stubs with grpc_tools.protoc into a
temporary directory, calls every method through the given target with the
given :authority, and prints the outcomes as one JSON object on stdout.
Needs `pip install grpcio grpcio-tools`.
"""

import argparse
import json
import sys
import tempfile

import grpc
from grpc_tools import protoc

TIMEOUT = 10  # seconds per call


def generate_stubs(proto_root, out_dir):
    rc = protoc.main([
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        "levee/testing/v1/flaky.proto",
    ])
    if rc != 0:
        sys.exit(f"grpc_tools.protoc failed with {rc}")
    sys.path.insert(0, out_dir)
    from levee.testing.v1 import flaky_pb2, flaky_pb2_grpc
    return flaky_pb2, flaky_pb2_grpc


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
    parser.add_argument("--proto-root", required=True, help="directory holding levee/testing/v1/flaky.proto")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="levee-py-stubs-") as out_dir:
        pb, pb_grpc = generate_stubs(args.proto_root, out_dir)
        print(json.dumps(run(args.target, args.authority, pb, pb_grpc)))


if __name__ == "__main__":
    main()
