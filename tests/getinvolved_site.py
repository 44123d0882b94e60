"""A stand-in for the getinvolved.ca JSON-RPC service, as the README's contract defines it,
served by pytest-httpserver, with failures to order."""

import base64
import json

from werkzeug.wrappers import Response


class GetInvolvedSite:
    def __init__(self, httpserver, user=None, token=None):
        self.httpserver = httpserver
        self.credentials = None if user is None else (user, token)
        self.opportunities = {}
        self.calls = []
        self.failures = []  # per call, in order: "500", "timeout", "401", "error", None
        httpserver.expect_request("/rpc", method="POST").respond_with_handler(self.handle)

    @property
    def url(self):
        return self.httpserver.url_for("/rpc")

    def handle(self, request):
        failure = self.failures.pop(0) if self.failures else None
        if failure == "500":
            return Response("boom", status=500)
        if failure == "timeout":
            import time

            time.sleep(1.5)
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
