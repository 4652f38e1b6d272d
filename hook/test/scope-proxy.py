#!/usr/bin/env python3
"""scope-proxy.py LISTEN UPSTREAM: the plugin API of flannel-np, with the network driver's scope
reported as "local".

Test scaffolding for e2e-docker.sh only. dockerd 20.10 accepts a legacy (v1, socket-discovered)
plugin only for local-scope networks: in swarm mode it refuses legacy network drivers ("legacy
plugin ... of type NetworkDriver is not supported in swarm mode"), outside it a global-scope
driver needs a swarm, and `--scope local` is refused ("cannot downgrade network scope"). The
createContainer hook does not care: on Docker <= 27, Join, libnetwork-setkey and runc create run
in the same order for local and swarm networks. Every other call passes through unchanged.
"""
import http.client
import http.server
import json
import os
import socket
import socketserver
import sys


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=60)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(60)
        self.sock.connect(self.path)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def address_string(self):
        return "docker"

    def log_message(self, fmt, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        c = UnixConnection(self.server.upstream)
        c.request("POST", self.path, body, {"Content-Type": self.headers.get("Content-Type", "application/json")})
        r = c.getresponse()
        data = r.read()
        if self.path == "/NetworkDriver.GetCapabilities" and r.status == 200:
            caps = json.loads(data)
            caps["Scope"] = "local"
            caps["ConnectivityScope"] = "local"
            data = json.dumps(caps).encode()
        self.send_response(r.status)
        self.send_header("Content-Type", r.getheader("Content-Type", "application/json"))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        c.close()


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def main():
    listen, upstream = sys.argv[1], sys.argv[2]
    os.makedirs(os.path.dirname(listen), exist_ok=True)
    if os.path.exists(listen):
        os.unlink(listen)
    s = Server(listen, Handler)
    s.upstream = upstream
    s.serve_forever()


if __name__ == "__main__":
    main()
