"""Starts the real normserve binary on free ports for Python tests.

    with LiveServer(binary) as server:
        server.grpc_port, server.metrics_port, server.target

`binary` may also be a command list (e.g. [python, script]); the port
flags and `args` follow it.
"""
import re
import subprocess


class LiveServer:
    def __init__(self, binary, *args):
        self.command = list(binary) if isinstance(binary, (list, tuple)) else [binary]
        self.args = list(args)

    def __enter__(self):
        self.proc = subprocess.Popen(
            [*self.command, "--grpc_port=0", "--metrics_port=0", *self.args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"grpc=([^ ]+):(\d+) metrics=[^ ]+:(\d+)", line)
        if not m:
            self.proc.kill()
            raise RuntimeError(f"server did not start: {line!r}")
        self.grpc_port, self.metrics_port = int(m.group(2)), int(m.group(3))
        self.target = f"{m.group(1)}:{self.grpc_port}"
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        code = self.proc.wait(timeout=30)
        self.proc.stdout.close()
        assert code == 0, f"server exited with {code}"
