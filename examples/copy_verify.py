#!/usr/bin/env python3
"""Copies a directory tree file by file, then verifies every copy's SHA-256.

A jobcast command kind (see examples/jobcast.toml and docs/KINDS.md): it
reports its progress with the jobcast progress protocol, one JSON object per
line, on the pipe named by JOBCAST_PROGRESS_FD (or on stdout when run by hand),
in bytes per stage: `copying`, then `verifying`. Its last report carries the
`result`. SIGTERM (a cancel) stops it between two chunks: it removes the file
it was writing and exits 143.

    python3 copy_verify.py SOURCE DESTINATION [--overwrite=true|false]

Standard library only.
"""

import argparse
import hashlib
import json
import os
import shutil
import signal
import sys

CHUNK = 1 << 20  # bytes read and written at a time; progress is reported per chunk

STAGES = [{"name": "copying", "weight": 0.7}, {"name": "verifying", "weight": 0.3}]


def progress_stream():
    """The protocol's stream: the dedicated pipe if jobcast gave one."""
    fd = os.environ.get("JOBCAST_PROGRESS_FD")
    if fd is None:
        return sys.stdout
    return os.fdopen(int(fd), "w", buffering=1)


REPORTS = progress_stream()


def report(**fields):
    REPORTS.write(json.dumps(fields) + "\n")
    REPORTS.flush()


def fail(code, message, retryable=False, status=1):
    report(error={"code": code, "message": message, "retryable": retryable})
    print(f"copy_verify: {message}", file=sys.stderr)
    sys.exit(status)


class Cancelled(Exception):
    pass


STOP = False


def on_term(signum, frame):
    global STOP
    STOP = True


def check_stop():
    if STOP:
        raise Cancelled()


def flag(text):
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def files_under(root):
    """Every regular file under root, as sorted relative paths."""
    found = []
    for directory, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(directory, name)
            if os.path.isfile(path) and not os.path.islink(path):
                found.append(os.path.relpath(path, root))
    return found


def chunks(reader):
    """The file's chunks, stopping between them if asked to stop."""
    while True:
        check_stop()
        chunk = reader.read(CHUNK)
        if not chunk:
            return
        yield chunk


def copy_file(source, target, done, total):
    """Copies one file chunk by chunk; answers the bytes done after it."""
    os.makedirs(os.path.dirname(target), exist_ok=True)
    partial = target + ".partial"
    try:
        with open(source, "rb") as reader, open(partial, "wb") as writer:
            for chunk in chunks(reader):
                writer.write(chunk)
                done += len(chunk)
                report(current=done, message=f"copying {os.path.basename(source)}")
        shutil.copystat(source, partial)
        os.replace(partial, target)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise
    return done


def sha256(path, done):
    digest = hashlib.sha256()
    with open(path, "rb") as reader:
        for chunk in chunks(reader):
            digest.update(chunk)
            done += len(chunk)
            report(current=done)
    return digest.hexdigest(), done


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source")
    parser.add_argument("destination")
    parser.add_argument("--overwrite", type=flag, default=False)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, on_term)

    source = os.path.abspath(args.source)
    destination = os.path.abspath(args.destination)
    if not os.path.isdir(source):
        fail("source_missing", f"{source} is not a directory")
    if os.path.exists(destination) and os.listdir(destination) and not args.overwrite:
        fail("destination_exists", f"{destination} is not empty (pass overwrite to replace files)")
    if destination == source or destination.startswith(source + os.sep):
        fail("destination_inside_source", f"{destination} is inside {source}")

    files = files_under(source)
    sizes = {name: os.path.getsize(os.path.join(source, name)) for name in files}
    total = sum(sizes.values())
    print(f"copying {len(files)} files, {total} bytes, from {source} to {destination}")

    try:
        report(stages=STAGES, stage="copying", current=0, total=total, unit="bytes",
               message=f"{len(files)} files to copy")
        done = 0
        for name in files:
            done = copy_file(os.path.join(source, name), os.path.join(destination, name), done, total)
            print(f"copied {name} ({sizes[name]} bytes)")

        report(stage="verifying", current=0, total=total, unit="bytes", message="verifying checksums")
        done = 0
        manifest = hashlib.sha256()
        for name in files:
            expected, _ = sha256(os.path.join(source, name), 0)
            actual, done = sha256(os.path.join(destination, name), done)
            if actual != expected:
                fail("verify_failed", f"{name}: the copy's SHA-256 differs from the source's", retryable=True)
            manifest.update(f"{actual}  {name}\n".encode())
            report(message=f"verified {name}")
    except Cancelled:
        print("copy_verify: stopped by SIGTERM; removed the partial file", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)
    except OSError as error:
        fail("io_error", f"{error.filename}: {error.strerror}", retryable=True)

    print(f"verified {len(files)} files")
    report(result={
        "source": source,
        "destination": destination,
        "files": len(files),
        "bytes": total,
        "manifest_sha256": manifest.hexdigest(),
    })


if __name__ == "__main__":
    main()
