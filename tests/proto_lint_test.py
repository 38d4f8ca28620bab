#!/usr/bin/env python3
"""Checks proto/ against the rules of buf's STANDARD lint category that
matter for a wire API (buf itself is not packaged for Debian):

- PACKAGE_DIRECTORY_MATCH: package a.b.v1 lives in a/b/v1/
- PACKAGE_VERSION_SUFFIX: the package ends in a version (v1, v1beta1, ...)
- ENUM_VALUE_PREFIX / ENUM_ZERO_VALUE_SUFFIX: values are prefixed with the
  enum's UPPER_SNAKE name, and the zero value is <PREFIX>_UNSPECIFIED
- ENUM/MESSAGE PascalCase, FIELD lower_snake_case, ENUM_VALUE UPPER_SNAKE
- SERVICE_SUFFIX: services end in "Service"
- RPC_REQUEST_STANDARD_NAME / RPC_RESPONSE_STANDARD_NAME and
  RPC_REQUEST_RESPONSE_UNIQUE: rpc Foo takes FooRequest, returns FooResponse,
  and no message serves two RPCs.

proto/inference/ is exempt: it is the Open Inference Protocol's own wire
contract (package `inference`, Triton's names and field numbers), which
clients depend on byte for byte and which we do not get to restyle.

Usage: proto_lint_test.py PROTO_ROOT
"""
import os
import re
import subprocess
import sys
import tempfile

from google.protobuf import descriptor_pb2

PASCAL = re.compile(r"^[A-Z][A-Za-z0-9]*$")
LOWER_SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
UPPER_SNAKE = re.compile(r"^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$")
EXEMPT = ("inference/",)
VERSION = re.compile(r"^v\d+((alpha|beta)\d+)?$")


def upper_snake(name):
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).upper()


def lint(root):
    protos = sorted(
        os.path.relpath(os.path.join(d, f), root)
        for d, _, files in os.walk(root) for f in files if f.endswith(".proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "set.pb")
        subprocess.run(["protoc", f"--proto_path={root}", f"--descriptor_set_out={out}",
                        *protos], check=True)
        fds = descriptor_pb2.FileDescriptorSet.FromString(open(out, "rb").read())

    errors = []
    used = {}
    for f in fds.file:
        where = f.name
        if f.name.startswith(EXEMPT):
            continue
        if os.path.dirname(f.name) != f.package.replace(".", "/"):
            errors.append(f"{where}: package {f.package} is not in directory "
                          f"{f.package.replace('.', '/')}")
        if not VERSION.match(f.package.split(".")[-1]):
            errors.append(f"{where}: package {f.package} has no version suffix")
        if not LOWER_SNAKE.match(os.path.basename(f.name)[:-len(".proto")]):
            errors.append(f"{where}: file name is not lower_snake_case")

        def check_enum(e, scope):
            if not PASCAL.match(e.name):
                errors.append(f"{where}: enum {scope}{e.name} is not PascalCase")
            prefix = upper_snake(e.name) + "_"
            for v in e.value:
                if not UPPER_SNAKE.match(v.name) or not v.name.startswith(prefix):
                    errors.append(f"{where}: {v.name} lacks the prefix {prefix}")
                if v.number == 0 and v.name != prefix + "UNSPECIFIED":
                    errors.append(f"{where}: zero value of {e.name} is {v.name}, "
                                  f"expected {prefix}UNSPECIFIED")

        def check_message(m, scope):
            if not PASCAL.match(m.name):
                errors.append(f"{where}: message {scope}{m.name} is not PascalCase")
            for field in m.field:
                if not LOWER_SNAKE.match(field.name):
                    errors.append(f"{where}: field {m.name}.{field.name} is not lower_snake_case")
            for e in m.enum_type:
                check_enum(e, m.name + ".")
            for n in m.nested_type:
                if not n.options.map_entry:
                    check_message(n, m.name + ".")

        for e in f.enum_type:
            check_enum(e, "")
        for m in f.message_type:
            check_message(m, "")
        for s in f.service:
            if not s.name.endswith("Service"):
                errors.append(f"{where}: service {s.name} does not end in Service")
            for rpc in s.method:
                req = rpc.input_type.split(".")[-1]
                resp = rpc.output_type.split(".")[-1]
                allowed_req = {rpc.name + "Request", s.name + rpc.name + "Request"}
                allowed_resp = {rpc.name + "Response", s.name + rpc.name + "Response"}
                if req not in allowed_req:
                    errors.append(f"{where}: rpc {rpc.name} takes {req}, expected {rpc.name}Request")
                if resp not in allowed_resp:
                    errors.append(f"{where}: rpc {rpc.name} returns {resp}, expected {rpc.name}Response")
                for t in (rpc.input_type, rpc.output_type):
                    if t in used:
                        errors.append(f"{where}: {t} is used by rpcs {used[t]} and {rpc.name}")
                    used[t] = rpc.name
    return errors


if __name__ == "__main__":
    problems = lint(sys.argv[1])
    for p in problems:
        print("lint:", p)
    print(f"proto lint: {len(problems)} problem(s)")
    sys.exit(1 if problems else 0)
