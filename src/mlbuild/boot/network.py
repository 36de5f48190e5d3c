"""The guest's network: QEMU's user networking (-nic user), and for the boot test a file served on the host's loopback.

The boot test keeps every packet inside the machine: restrict=on (the guest reaches neither the host
nor anything beyond it) and one guestfwd, 10.0.2.100:80 in the guest, whose every connection runs this
file as a program (QEMU's `cmd:`) that relays it to an HTTP server the test started on 127.0.0.1.
This module is also that program: it imports nothing of mlbuild, so QEMU runs it by its path.
"""

import hashlib
import os
import select
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GUEST_SERVER = "10.0.2.100"  # the address in QEMU's user network (10.0.2.0/24) the boot test's server has
CHECK_PATH = "/mlbuild-network-check"
MODES = ("user", "restricted", "none")  # `network`: docs/usage.md


class FileServer:
    """An HTTP server on 127.0.0.1 (a free port) that serves `data` at CHECK_PATH, in a thread; a context manager."""

    def __init__(self, data: bytes):
        self.data = data
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path != CHECK_PATH:
                    self.send_error(404)
                    return
                owner.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(owner.data)))
                self.end_headers()
                self.wfile.write(owner.data)

            def log_message(self, *args):
                pass  # the boot test's output is its checks

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def nic_options(nic: str | None, mode: str, forward_port: int | None = None) -> list[str]:
    """QEMU's -nic for the network mode: user (the guest reaches what the host reaches, through QEMU),
    restricted (restrict=on: nothing, but for the forward), none (no card). forward_port: a port on the
    host's 127.0.0.1 the guest reaches at GUEST_SERVER:80 (restricted only)."""
    if mode == "none":
        return ["-nic", "none"]
    # A named card as -netdev + -device: -nic's model= creates only cards on PCI or the machine's own, not a
    # virtio-mmio one (riscv64's virt without a PCI host: "requested NIC … was not created").
    options = "user" + (",id=net0" if nic else "")
    if mode == "restricted":
        options += ",restrict=on"
        if forward_port is not None:
            relay = f"{sys.executable} {os.path.abspath(__file__)} {int(forward_port)}"
            options += f",guestfwd=tcp:{GUEST_SERVER}:80-cmd:{relay.replace(',', ',,')}"  # QEMU doubles a comma in a value
    return ["-netdev", options, "-device", f"{nic},netdev=net0"] if nic else ["-nic", options]


def relay(port: int) -> int:
    """Copy standard input to a connection to 127.0.0.1:port and its answer to standard output, until both end."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    connection.settimeout(None)
    inputs = {0: connection.fileno(), connection.fileno(): 1}
    open_ends = set(inputs)
    while open_ends:
        ready, _, _ = select.select(list(open_ends), [], [], 60)
        if not ready:
            return 1  # a minute of silence: the guest went away
        for source in ready:
            data = os.read(source, 65536)
            if not data:
                open_ends.discard(source)
                if source == 0:
                    connection.shutdown(socket.SHUT_WR)
                else:
                    return 0  # the server is done
                continue
            target = inputs[source]
            view = memoryview(data)
            while view:
                view = view[os.write(target, view):]
    return 0


if __name__ == "__main__":  # QEMU's guestfwd cmd: one guest connection on stdin and stdout
    sys.exit(relay(int(sys.argv[1])))
