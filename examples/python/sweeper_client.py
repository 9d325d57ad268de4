"""A stdlib-only client of sweeper's ledger HTTP API (see docs/api.md).

    from sweeper_client import Client
    c = Client("http://127.0.0.1:8080", token)
    c.insert("task-42", callee_id="agent-a", task_preview="render invoice", timeout_seconds=3600)
    c.transition("task-42", "in_progress")
    if not c.heartbeat("task-42")["live"]:
        ...  # the delegation is terminal (e.g. marked stuck): stop working
    c.transition("task-42", "completed", result="invoice.pdf")

Errors are raised as Problem (RFC 9457 problem details); a refused
transition is a Problem with status 409 and an outcome.
"""

import json
import urllib.error
import urllib.parse
import urllib.request


class Problem(Exception):
    """An error answer of the API: RFC 9457 problem details."""

    def __init__(self, status, problem):
        self.status = status
        self.problem = problem
        self.type = problem.get("type", "")
        self.field = problem.get("field")
        self.outcome = problem.get("outcome")
        super().__init__("%d %s: %s" % (status, problem.get("title", ""), problem.get("detail", "")))


class Client:
    """One API token's view of the ledger. The token is never printed."""

    def __init__(self, base_url, token, timeout=70.0):
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.timeout = timeout

    def __repr__(self):
        return "Client(%r, token=<hidden>)" % self.base_url

    def _call(self, method, path, body=None, query=None):
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        data = None
        headers = {"Authorization": "Bearer " + self._token, "Accept": "application/json"}
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as e:
            try:
                problem = json.load(e)
            except ValueError:
                problem = {"title": e.reason}
            raise Problem(e.code, problem) from None

    def insert(self, delegation_id, callee_id, caller_id=None, task_preview=None,
               idempotency_key=None, status=None, deadline=None, timeout_seconds=None):
        """Record a delegation; returns {"outcome", "delegation_id"}."""
        body = {"delegation_id": delegation_id, "callee_id": callee_id}
        for k, v in (("caller_id", caller_id), ("task_preview", task_preview),
                     ("idempotency_key", idempotency_key), ("status", status),
                     ("deadline", deadline), ("timeout_seconds", timeout_seconds)):
            if v is not None:
                body[k] = v
        return self._call("POST", "/v1/delegations", body)[1]

    def get(self, delegation_id):
        return self._call("GET", "/v1/delegations/" + urllib.parse.quote(delegation_id, safe=""))[1]

    def transition(self, delegation_id, to, result=None, error=None, reason=None):
        """Move a delegation; returns {"outcome": "applied"|"unchanged", "status"}."""
        body = {"to": to}
        for k, v in (("result", result), ("error", error), ("reason", reason)):
            if v is not None:
                body[k] = v
        path = "/v1/delegations/%s/transitions" % urllib.parse.quote(delegation_id, safe="")
        return self._call("POST", path, body)[1]

    def heartbeat(self, delegation_id, progress=None):
        """Returns {"live": bool, "status", "reason"?}; live False means stop
        (reason says why a stuck delegation was marked). progress, a dict of
        at most 8 KiB as JSON, replaces the delegation's progress: a
        delegation whose progress stops changing is marked stuck (stalled)
        after its progress timeout, however often it heartbeats."""
        path = "/v1/delegations/%s/heartbeat" % urllib.parse.quote(delegation_id, safe="")
        body = None if progress is None else {"progress": progress}
        return self._call("POST", path, body)[1]

    def heartbeats(self, ids=(), beats=()):
        """One statement for many delegations; returns the ids not live.
        beats: (delegation_id, progress) pairs, to report progress too."""
        body = {"ids": list(ids)}
        if beats:
            body["beats"] = [{"id": i, "progress": p} for i, p in beats]
        return self._call("POST", "/v1/heartbeats", body)[1]["not_live"]

    def events(self, delegation_id):
        path = "/v1/delegations/%s/events" % urllib.parse.quote(delegation_id, safe="")
        return self._call("GET", path)[1]["events"]

    def feed(self, after=0, limit=None, to_status=None, caller_id=None, callee_id=None, wait=None):
        """One page of the durable feed: {"events", "next_after", "pending"}."""
        return self._call("GET", "/v1/events", query={
            "after": after, "limit": limit, "to_status": to_status,
            "caller_id": caller_id, "callee_id": callee_id, "wait": wait})[1]

    def follow(self, after=0, wait="30s", **filters):
        """Yield every matching event after the cursor, for ever, long-polling.
        Keep the id of the last event you processed: following again from it
        misses nothing and repeats nothing."""
        while True:
            page = self.feed(after=after, wait=wait, **filters)
            for ev in page["events"]:
                yield ev
            after = page["next_after"]

    def summary(self, caller_id=None):
        return self._call("GET", "/v1/summary", query={"caller_id": caller_id})[1]
