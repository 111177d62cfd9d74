#!/usr/bin/env python3
"""Checks for scripts/run.sh: that its ports are free, and that each component it started is up
and is the process answering on its ports (not something else that happens to listen there).

  run_check.py free NAME=PORT...
      Exit 1 naming every busy port.
  run_check.py ready NAME PID LOG TIMEOUT_S PORT[,PORT...] [URL]
      Wait until process PID (still alive) listens on every PORT on 127.0.0.1 and URL (if given)
      answers 2xx. Exit 1 with the reason and the last lines of LOG when PID exits, when another
      process listens on one of the ports, or after TIMEOUT_S seconds.
  run_check.py owner PID PORT...
      Exit 1 when one of the ports is not (or no longer) listened on by PID.

Who listens is read from /proc (Linux); elsewhere the ownership check is skipped and only the
URL and the process being alive are checked.
"""
import os
import socket
import sys
import time
import urllib.request

LOG_LINES = 15


def listening_inodes(port):
    """Socket inodes listening on `port` (TCP, IPv4 and IPv6), or None without /proc."""
    inodes = set()
    found_table = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                found_table = True
                next(f)
                for line in f:
                    fields = line.split()
                    local, state, inode = fields[1], fields[3], fields[9]
                    if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                        inodes.add(inode)
        except OSError:
            continue
    return inodes if found_table else None


def socket_inodes(pid):
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def describe_owner(inodes):
    """'pid N (command)' of the process holding one of `inodes`, if it can be found."""
    for entry in os.listdir("/proc"):
        if entry.isdigit() and socket_inodes(entry) & inodes:
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                command = "?"
            return f"pid {entry}: {command[:120]}"
    return "a process this user cannot see"


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by run.sh) counts as dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def port_state(pid, port):
    """'ours', 'free', 'unknown' (no /proc) or a description of the other process."""
    inodes = listening_inodes(port)
    if inodes is None:
        return "unknown"
    if not inodes:
        return "free"
    if inodes & socket_inodes(pid):
        return "ours"
    return describe_owner(inodes)


def tail(log):
    try:
        with open(log, errors="replace") as f:
            lines = f.read().splitlines()[-LOG_LINES:]
    except OSError:
        return f"  (no log at {log})"
    return "\n".join(f"  | {line}" for line in lines) or f"  (nothing in {log})"


def fail(name, why, log):
    print(f"Inlet did not start: {name} {why}. Last lines of {log}:\n{tail(log)}", file=sys.stderr)
    sys.exit(1)


def answers(url):
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return 200 <= response.status < 300
    except Exception:
        return False


def ready(name, pid, log, timeout, ports, url):
    deadline = time.monotonic() + timeout
    while True:
        if not alive(pid):
            fail(name, f"exited (pid {pid})", log)
        states = {port: port_state(pid, port) for port in ports}
        for port, state in states.items():
            if state not in ("ours", "free", "unknown"):
                fail(name, f"is not the process listening on 127.0.0.1:{port}: {state} is", log)
        if all(state in ("ours", "unknown") for state in states.values()) and (url is None or answers(url)):
            return
        if time.monotonic() > deadline:
            waiting = [f"127.0.0.1:{p}" for p, s in states.items() if s == "free"]
            what = f"is not listening on {', '.join(waiting)}" if waiting else f"does not answer {url}"
            fail(name, f"{what} after {timeout:g} s", log)
        time.sleep(0.1)


def main(argv):
    if len(argv) >= 2 and argv[0] == "free":
        busy = []
        for item in argv[1:]:
            name, port = item.rsplit("=", 1)
            with socket.socket() as probe:
                probe.settimeout(0.5)
                if probe.connect_ex(("127.0.0.1", int(port))) == 0:
                    busy.append(f"  127.0.0.1:{port} ({name})")
        if busy:
            print("Inlet cannot start: these ports are already in use (is scripts/run.sh already running? "
                  "INLET_BASE_PORT or the *_PORT variables move them; scripts/run.sh --help):", file=sys.stderr)
            print("\n".join(busy), file=sys.stderr)
            sys.exit(1)
    elif len(argv) in (6, 7) and argv[0] == "ready":
        name, pid, log, timeout, ports = argv[1], int(argv[2]), argv[3], float(argv[4]), argv[5]
        ready(name, pid, log, timeout, [int(p) for p in ports.split(",")], argv[6] if len(argv) == 7 else None)
    elif len(argv) >= 3 and argv[0] == "owner":
        pid = int(argv[1])
        for port in map(int, argv[2:]):
            state = port_state(pid, port)
            if state not in ("ours", "unknown"):
                print(f"127.0.0.1:{port}: {state}", file=sys.stderr)
                sys.exit(1)
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
