#!/usr/bin/env python3
"""A third-party gRPC server (grpcio) for Levee's end-to-end tests.

Serves levee.testing.v1.Flaky as levee-flaky does, as far as
flaky_grpc_client.py calls it: Echo answers with the message and its
instance name (also in the x-flaky-instance header) or fails with the
status a request's x-flaky-grpc-status asks for; ServerStream sends
"<message> <i>" count times, then fails with final_code when it is set;
ClientStream joins the messages with commas; BidiStream echoes each one.
Prints "listening" once it serves. Needs `pip install grpcio grpcio-tools`.
"""

import argparse
import sys
from concurrent import futures

import grpc

import flaky_stubs


def make_servicer(instance, pb, pb_grpc):
    class Flaky(pb_grpc.FlakyServicer):
        def Echo(self, request, context):
            context.send_initial_metadata([("x-flaky-instance", instance)])
            asked = dict(context.invocation_metadata()).get("x-flaky-grpc-status")
            if asked:
                context.abort(_code(int(asked)), "flaky: injected")
            return pb.EchoResponse(message=request.message, instance=instance)

        def ServerStream(self, request, context):
            for i in range(request.count):
                yield pb.EchoResponse(message=f"{request.message} {i}", instance=instance,
                                      sequence=i)
            if request.final_code:
                context.abort(_code(request.final_code), "flaky: stream failed")

        def ClientStream(self, request_iterator, context):
            messages = [r.message for r in request_iterator]
            return pb.EchoResponse(message=",".join(messages), instance=instance,
                                   sequence=len(messages))

        def BidiStream(self, request_iterator, context):
            for i, r in enumerate(request_iterator):
                yield pb.EchoResponse(message=r.message, instance=instance, sequence=i)

    return Flaky()


def _code(number):
    """The grpc.StatusCode of a status number."""
    for code in grpc.StatusCode:
        if code.value[0] == number:
            return code
    return grpc.StatusCode.UNKNOWN


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", required=True, help="host:port to serve on")
    parser.add_argument("--instance", required=True, help="name in every answer")
    flaky_stubs.add_proto_root(parser)
    args = parser.parse_args()
    with flaky_stubs.stubs(args.proto_root) as (pb, pb_grpc):
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        pb_grpc.add_FlakyServicer_to_server(make_servicer(args.instance, pb, pb_grpc), server)
        if server.add_insecure_port(args.listen) == 0:
            sys.exit(f"cannot listen on {args.listen}")
        server.start()
        print("listening", flush=True)
        server.wait_for_termination()


if __name__ == "__main__":
    main()
