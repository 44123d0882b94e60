"""A stand-in for the getinvolved.ca JSON-RPC service, as the README's contract defines it,
served by pytest-httpserver, with failures to order."""

import base64
import json

from werkzeug.wrappers import Response


def wait_for_the_client_to_give_up(request, limit=60):
    """Read the request, then wait until the client closes the connection (its timeout
    fired and it dropped the request), at most ``limit`` seconds; return True if it did.

    The server (pytest-httpserver's) handles one request at a time: the client's retry
    waits in the listen queue and is answered once this returns."""
    import select
    import socket
    import time

    request.get_data()  # the body, so that what is left on the socket is the client's end
    connection = request.environ["werkzeug.socket"]
    deadline = time.monotonic() + limit
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([connection], [], [], left)
        if not readable:
            break
        try:
            if connection.recv(1, socket.MSG_PEEK) == b"":
                return True  # end of stream: the client closed the connection
        except OSError:
            return True  # reset: the client dropped the connection
        time.sleep(0.01)  # more data (none expected): keep waiting for the end
    return False


class GetInvolvedSite:
    def __init__(self, httpserver, user=None, token=None):
        self.httpserver = httpserver
        self.credentials = None if user is None else (user, token)
        self.opportunities = {}
        self.calls = []
        # per call, in order: "500", "503" (Retry-After: 1), "429", "timeout", "401", "error",
        # None
        self.failures = []
        self.times = []  # time.monotonic() of every request, failed ones too
        self.gave_up = []  # per "timeout": whether the client closed the connection first
        httpserver.expect_request("/rpc", method="POST").respond_with_handler(self.handle)

    @property
    def url(self):
        return self.httpserver.url_for("/rpc")

    def handle(self, request):
        import time

        self.times.append(time.monotonic())
        failure = self.failures.pop(0) if self.failures else None
        if failure == "500":
            return Response("boom", status=500)
        if failure == "503":
            return Response("busy", status=503, headers={"Retry-After": "1"})
        if failure == "429":
            return Response("slow down", status=429)
        if failure == "timeout":
            # Answer only once the client has given up on this request: no race between a
            # sleep here and the client's timeout, however slow the machine.
            self.gave_up.append(wait_for_the_client_to_give_up(request))
            return Response("late", status=504)
        header = request.headers.get("Authorization", "")
        user, _, token = base64.b64decode(header.split(" ", 1)[-1] or b"").decode().partition(":")
        if failure == "401" or (self.credentials and (user, token) != self.credentials):
            return Response("no", status=401)
        body = json.loads(request.data)
        self.calls.append((body["method"], body["params"], user))
        if failure == "error":
            reply = {"jsonrpc": "2.0", "id": body["id"],
                     "error": {"code": -32000, "message": "quota exceeded"}}
        elif body["method"] == "opportunities.upsert":
            batch = body["params"]["opportunities"]
            assert len(batch) <= 100
            for opportunity in batch:
                self.opportunities[opportunity["id"]] = opportunity
            reply = {"jsonrpc": "2.0", "id": body["id"], "result": {"upserted": len(batch)}}
        elif body["method"] == "opportunities.withdraw":
            for vnum in body["params"]["ids"]:
                self.opportunities.pop(vnum, None)
            reply = {"jsonrpc": "2.0", "id": body["id"],
                     "result": {"withdrawn": len(body["params"]["ids"])}}
        else:
            reply = {"jsonrpc": "2.0", "id": body["id"],
                     "error": {"code": -32601, "message": "method not found"}}
        return Response(json.dumps(reply), content_type="application/json")
