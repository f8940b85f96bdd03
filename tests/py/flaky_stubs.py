"""The part of Levee's grpcio test peers that client and server share.

flaky_grpc_client.py and flaky_grpc_server.py both need the Python stubs of
levee.testing.v1.Flaky; `stubs(proto_root)` generates them with
grpc_tools.protoc into a temporary directory that lives as long as the
`with` block, and `add_proto_root(parser)` adds the `--proto-root` flag
both take. Needs `pip install grpcio grpcio-tools`.
"""

import contextlib
import sys
import tempfile

from grpc_tools import protoc

FLAKY_PROTO = "levee/testing/v1/flaky.proto"


def add_proto_root(parser):
    """Adds the --proto-root flag (where levee/testing/v1/flaky.proto is)."""
    parser.add_argument("--proto-root", required=True,
                        help=f"directory holding {FLAKY_PROTO}")


@contextlib.contextmanager
def stubs(proto_root):
    """Yields (flaky_pb2, flaky_pb2_grpc), generated into a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="levee-py-stubs-") as out_dir:
        rc = protoc.main([
            "grpc_tools.protoc",
            f"-I{proto_root}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            FLAKY_PROTO,
        ])
        if rc != 0:
            sys.exit(f"grpc_tools.protoc failed with {rc}")
        sys.path.insert(0, out_dir)
        from levee.testing.v1 import flaky_pb2, flaky_pb2_grpc
        yield flaky_pb2, flaky_pb2_grpc
