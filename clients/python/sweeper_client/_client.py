"""The HTTP client of sweeper's ledger API (docs/api.md), stdlib only."""

import datetime
import email.utils
import json
import logging
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

from ._models import (
    Delegation, DelegationPage, Event, FeedPage, HeartbeatResult, InsertResult,
    RetryPolicy, RetryResult, Summary, TransitionResult, WebhookAttempt, WebhookSubscription,
    format_time,
)
from ._version import __version__

__all__ = ["Client", "ProblemError", "NotLiveError", "Task"]

log = logging.getLogger("sweeper_client")


class ProblemError(Exception):
    """An error answer of the API: RFC 9457 problem details
    (application/problem+json). ``type`` is ``urn:sweeper:problem:<slug>``;
    ``slug`` is its last part (e.g. "invalid-field", "transition-refused")."""

    def __init__(self, status: int, problem: Dict[str, Any], retry_after: Optional[float] = None):
        self.status = status
        self.problem = problem
        self.type: str = problem.get("type", "")
        self.title: str = problem.get("title", "")
        self.detail: str = problem.get("detail", "")
        self.instance: str = problem.get("instance", "")
        self.field: Optional[str] = problem.get("field")
        self.outcome: Optional[str] = problem.get("outcome")
        self.current_status: Optional[str] = problem.get("current_status")
        self.retry_after = retry_after
        super().__init__("%d %s: %s" % (status, self.title, self.detail))

    @property
    def slug(self) -> str:
        return self.type.rsplit(":", 1)[-1]


class NotLiveError(Exception):
    """The delegation is terminal (stuck, failed, completed) or gone: its
    work must stop, and its outcome is not this worker's to record."""

    def __init__(self, delegation_id: str, status: Optional[str], stuck_reason: str = ""):
        self.delegation_id = delegation_id
        self.status = status
        self.stuck_reason = stuck_reason
        super().__init__(describe_not_live(delegation_id, status, stuck_reason))


def describe_not_live(delegation_id: str, status: Optional[str], stuck_reason: str = "") -> str:
    if status == "stuck":
        return "delegation %r was marked stuck (%s)" % (delegation_id, stuck_reason or "no reason recorded")
    if status == "failed":
        return "delegation %r was failed elsewhere (by its caller or an operator)" % delegation_id
    if status == "completed":
        return "delegation %r was completed elsewhere" % delegation_id
    if not status:
        return "delegation %r no longer exists" % delegation_id
    return "delegation %r is %s" % (delegation_id, status)


def _quote(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def _retry_after(value: Optional[str]) -> Optional[float]:
    """Retry-After as seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds())


def _wait_text(wait: Union[None, str, float, int]) -> Optional[str]:
    if wait is None or isinstance(wait, str):
        return wait
    return "%gs" % wait


class Client:
    """One API token's view of the ledger. The token is never printed.

    Answers 429 (rate limited) and 503 (database unavailable) are retried up
    to ``max_retries`` times, after the server's Retry-After (at most
    ``max_retry_delay`` seconds); every write of the API is idempotent, so a
    retry never writes twice. Other errors raise ProblemError.
    """

    def __init__(self, base_url: str, token: str, timeout: float = 70.0,
                 max_retries: int = 3, max_retry_delay: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep):
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_retry_delay = max_retry_delay
        self._sleep = sleep
        #: Retries made so far (answers 429 and 503 waited out).
        self.retries = 0

    def __repr__(self) -> str:
        return "Client(%r, token=<hidden>)" % self.base_url

    # -- transport ---------------------------------------------------------

    def _call(self, method: str, path: str, body: Any = None, query: Optional[Dict[str, Any]] = None) -> Any:
        url = self.base_url + path
        if query:
            q = {k: ("true" if v is True else "false" if v is False else v)
                 for k, v in query.items() if v is not None}
            if q:
                url += "?" + urllib.parse.urlencode(q)
        data = None
        headers = {"Authorization": "Bearer " + self._token, "Accept": "application/json",
                   "User-Agent": "sweeper-client-python/" + __version__}
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        attempt = 0
        while True:
            req = urllib.request.Request(url, data=data, method=method, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    raw = resp.read()
                    return json.loads(raw) if raw else None  # 204: no body
            except urllib.error.HTTPError as e:
                with e:
                    raw = e.read()
                try:
                    problem = json.loads(raw)
                    if not isinstance(problem, dict):
                        raise ValueError
                except ValueError:
                    problem = {"title": e.reason or "HTTP %d" % e.code, "status": e.code}
                retry_after = _retry_after(e.headers.get("Retry-After"))
                if e.code in (429, 503) and attempt < self.max_retries:
                    delay = retry_after if retry_after is not None else 0.5 * 2 ** attempt
                    attempt += 1
                    self.retries += 1
                    self._sleep(min(delay, self.max_retry_delay))
                    continue
                raise ProblemError(e.code, problem, retry_after) from None

    # -- delegations -------------------------------------------------------

    def insert(self, delegation_id: str, callee_id: str, caller_id: Optional[str] = None,
               task_preview: Optional[str] = None, idempotency_key: Optional[str] = None,
               status: Optional[str] = None, deadline: Optional[datetime.datetime] = None,
               timeout_seconds: Optional[float] = None,
               heartbeat_timeout_seconds: Optional[float] = None,
               progress_timeout_seconds: Optional[float] = None,
               queue_timeout_seconds: Optional[float] = None,
               start_timeout_seconds: Optional[float] = None,
               retry: Union[None, RetryPolicy, Dict[str, Any]] = None) -> InsertResult:
        """Record a delegation (POST /v1/delegations). A replay of the same id
        answers already_exists; a caller's idempotency key answers
        duplicate_key with the existing id, or retried (a next attempt)."""
        body: Dict[str, Any] = {"delegation_id": delegation_id, "callee_id": callee_id}
        for k, v in (("caller_id", caller_id), ("task_preview", task_preview),
                     ("idempotency_key", idempotency_key), ("status", status),
                     ("timeout_seconds", timeout_seconds),
                     ("heartbeat_timeout_seconds", heartbeat_timeout_seconds),
                     ("progress_timeout_seconds", progress_timeout_seconds),
                     ("queue_timeout_seconds", queue_timeout_seconds),
                     ("start_timeout_seconds", start_timeout_seconds)):
            if v is not None:
                body[k] = v
        if deadline is not None:
            body["deadline"] = format_time(deadline)
        if retry is not None:
            body["retry"] = retry.to_json() if isinstance(retry, RetryPolicy) else retry
        return InsertResult.from_json(self._call("POST", "/v1/delegations", body))

    def get(self, delegation_id: str) -> Delegation:
        """One delegation (GET /v1/delegations/{id}); 404 as ProblemError."""
        return Delegation.from_json(self._call("GET", "/v1/delegations/" + _quote(delegation_id)))

    def list(self, caller_id: Optional[str] = None, callee_id: Optional[str] = None,
             status: Optional[str] = None, in_flight: Optional[bool] = None,
             limit: Optional[int] = None, cursor: Optional[str] = None,
             exhausted: Optional[bool] = None) -> DelegationPage:
        """One page of delegations, newest first (GET /v1/delegations);
        exhausted=True keeps the attempts whose retry policy used all its
        retries."""
        return DelegationPage.from_json(self._call("GET", "/v1/delegations", query={
            "caller_id": caller_id, "callee_id": callee_id, "status": status,
            "in_flight": in_flight, "limit": limit, "cursor": cursor, "exhausted": exhausted}))

    def list_all(self, **filters: Any) -> Iterator[Delegation]:
        """Every delegation that list(**filters) pages through."""
        cursor = None
        while True:
            page = self.list(cursor=cursor, **filters)
            yield from page.delegations
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def transition(self, delegation_id: str, to: str, result: Optional[str] = None,
                   error: Optional[str] = None, reason: Optional[str] = None) -> TransitionResult:
        """Move a delegation (POST .../transitions): applied or unchanged; a
        refused move raises ProblemError 409 with outcome and current_status."""
        body: Dict[str, Any] = {"to": to}
        for k, v in (("result", result), ("error", error), ("reason", reason)):
            if v is not None:
                body[k] = v
        return TransitionResult.from_json(
            self._call("POST", "/v1/delegations/%s/transitions" % _quote(delegation_id), body))

    def heartbeat(self, delegation_id: str, progress: Optional[Dict[str, Any]] = None) -> HeartbeatResult:
        """Record that the worker is alive; live False means stop. progress,
        a dict of at most 8 KiB as JSON, replaces the delegation's progress:
        one whose progress stops changing is marked stuck (stalled) after
        its progress timeout, however often it heartbeats."""
        body = None if progress is None else {"progress": progress}
        return HeartbeatResult.from_json(
            self._call("POST", "/v1/delegations/%s/heartbeat" % _quote(delegation_id), body))

    def heartbeats(self, ids: Iterable[str] = (), beats: Iterable[Tuple[str, Dict[str, Any]]] = ()) -> List[str]:
        """Heartbeat many delegations in one statement; returns the ids not
        live. beats: (delegation_id, progress) pairs, to report progress too."""
        body: Dict[str, Any] = {"ids": list(ids)}
        beats = [{"id": i, "progress": p} for i, p in beats]
        if beats:
            body["beats"] = beats
        return self._call("POST", "/v1/heartbeats", body)["not_live"]

    def events(self, delegation_id: str) -> List[Event]:
        """The audit log of one delegation, oldest first."""
        out = self._call("GET", "/v1/delegations/%s/events" % _quote(delegation_id))
        return [Event.from_json(e) for e in out["events"]]

    def retry(self, delegation_id: str, new_delegation_id: Optional[str] = None,
              callee_id: Optional[str] = None, task_preview: Optional[str] = None,
              idempotency_key: Optional[str] = None, clear_idempotency_key: Optional[bool] = None,
              status: Optional[str] = None, deadline: Optional[datetime.datetime] = None,
              timeout_seconds: Optional[float] = None,
              heartbeat_timeout_seconds: Optional[float] = None,
              reason: Optional[str] = None) -> RetryResult:
        """The next attempt of a failed or stuck delegation (POST .../retry)."""
        body: Dict[str, Any] = {}
        for k, v in (("delegation_id", new_delegation_id), ("callee_id", callee_id),
                     ("task_preview", task_preview), ("idempotency_key", idempotency_key),
                     ("clear_idempotency_key", clear_idempotency_key), ("status", status),
                     ("timeout_seconds", timeout_seconds),
                     ("heartbeat_timeout_seconds", heartbeat_timeout_seconds), ("reason", reason)):
            if v is not None:
                body[k] = v
        if deadline is not None:
            body["deadline"] = format_time(deadline)
        return RetryResult.from_json(
            self._call("POST", "/v1/delegations/%s/retry" % _quote(delegation_id), body))

    def attempts(self, delegation_id: str) -> List[Delegation]:
        """The attempt chain the delegation belongs to, first attempt first."""
        out = self._call("GET", "/v1/delegations/%s/attempts" % _quote(delegation_id))
        return [Delegation.from_json(d) for d in out["attempts"]]

    def claim(self, limit: int, callee_id: Optional[str] = None) -> List[Delegation]:
        """Move up to limit due queued delegations of a callee (a worker
        token's own by default) to dispatched and return them, the longest
        due first (POST /v1/claims); concurrent claimers never get the same
        one."""
        body: Dict[str, Any] = {"limit": limit}
        if callee_id is not None:
            body["callee_id"] = callee_id
        return [Delegation.from_json(d) for d in self._call("POST", "/v1/claims", body)["delegations"]]

    def summary(self, caller_id: Optional[str] = None) -> Summary:
        """What is in flight, per status and per caller."""
        return Summary.from_json(self._call("GET", "/v1/summary", query={"caller_id": caller_id}))

    def openapi(self) -> Dict[str, Any]:
        """The API's OpenAPI document."""
        return self._call("GET", "/v1/openapi.json")

    # -- webhook subscriptions (admin tokens only) --------------------------

    def create_webhook(self, url: str, events: Optional[Iterable[str]] = None,
                       caller_id: Optional[str] = None,
                       callee_id: Optional[str] = None) -> WebhookSubscription:
        """Subscribe an endpoint to the ledger's events (POST /v1/webhooks).
        The answer's ``secret`` is shown this once: store it."""
        body: Dict[str, Any] = {"url": url}
        if events is not None:
            body["events"] = list(events)
        for k, v in (("caller_id", caller_id), ("callee_id", callee_id)):
            if v is not None:
                body[k] = v
        return WebhookSubscription.from_json(self._call("POST", "/v1/webhooks", body))

    def webhooks(self) -> List[WebhookSubscription]:
        """The oldest 10000 subscriptions, oldest first, without their
        secrets (GET /v1/webhooks)."""
        return [WebhookSubscription.from_json(x) for x in self._call("GET", "/v1/webhooks")["subscriptions"]]

    def webhook(self, webhook_id: str) -> WebhookSubscription:
        """One subscription, without its secret; 404 as ProblemError."""
        return WebhookSubscription.from_json(self._call("GET", "/v1/webhooks/" + _quote(webhook_id)))

    def delete_webhook(self, webhook_id: str) -> None:
        """Delete a subscription and its attempts; 404 as ProblemError."""
        self._call("DELETE", "/v1/webhooks/" + _quote(webhook_id))

    def rotate_webhook_secret(self, webhook_id: str) -> WebhookSubscription:
        """A new secret, returned this once; deliveries are signed with both
        until ``rotation_ends_at``."""
        return WebhookSubscription.from_json(
            self._call("POST", "/v1/webhooks/%s/rotate-secret" % _quote(webhook_id)))

    def resume_webhook(self, webhook_id: str) -> WebhookSubscription:
        """Make a paused or disabled subscription active again, from its
        cursor."""
        return WebhookSubscription.from_json(self._call("POST", "/v1/webhooks/%s/resume" % _quote(webhook_id)))

    def webhook_attempts(self, webhook_id: str, limit: Optional[int] = None) -> List[WebhookAttempt]:
        """A subscription's newest delivery attempts, newest first (at most
        limit, 1 to 50; 50 by default)."""
        out = self._call("GET", "/v1/webhooks/%s/attempts" % _quote(webhook_id), query={"limit": limit})
        return [WebhookAttempt.from_json(x) for x in out["attempts"]]

    # -- the durable feed --------------------------------------------------

    def feed(self, after: int = 0, limit: Optional[int] = None, to_status: Optional[str] = None,
             caller_id: Optional[str] = None, callee_id: Optional[str] = None,
             wait: Union[None, str, float] = None) -> FeedPage:
        """One page of the durable feed (GET /v1/events); wait (seconds or
        "30s") makes it a long poll."""
        return FeedPage.from_json(self._call("GET", "/v1/events", query={
            "after": after, "limit": limit, "to_status": to_status,
            "caller_id": caller_id, "callee_id": callee_id, "wait": _wait_text(wait)}))

    def follow(self, after: int = 0, wait: Union[str, float] = "30s", **filters: Any) -> Iterator[Event]:
        """Every matching event after the cursor ``after``, for ever,
        long-polling. Keep the id of the last event you processed: following
        again from it misses nothing and repeats nothing."""
        while True:
            page = self.feed(after=after, wait=wait, **filters)
            for ev in page.events:
                yield ev
                after = ev.id
            after = max(after, page.next_after)

    # -- workers -----------------------------------------------------------

    def task(self, delegation_id: str, heartbeat_interval: Optional[float] = None,
             global_heartbeat_timeout: float = 600.0,
             on_beat: Optional[Callable[[HeartbeatResult], None]] = None) -> "Task":
        """A task helper for a worker token: ``with client.task(id) as t:``
        (see Task)."""
        return Task(self, delegation_id, heartbeat_interval, global_heartbeat_timeout, on_beat)


class Task:
    """Works on one delegation the way the ledger expects a worker to::

        with client.task("task-42") as t:
            for i, chunk in enumerate(work(t.delegation.task_preview)):
                if t.cancelled.is_set():   # stuck, failed or completed elsewhere
                    break
                t.progress({"chunk": i})   # sent with the next heartbeat
                ...
            t.result = "invoice.pdf"

    Entering moves the delegation to in_progress (raises NotLiveError if it
    is terminal) and starts heartbeats in a background thread, every third
    of the delegation's heartbeat timeout (``global_heartbeat_timeout``, the
    sweeper's, when it has none of its own). When a heartbeat answers
    live=false, ``cancelled`` is set and ``reason`` says why. Leaving the
    block records the outcome: completed (with ``result``) on a clean exit,
    failed with the exception otherwise (which propagates); nothing when the
    delegation was no longer live. ``outcome`` is then "completed",
    "failed" or "not_live".
    """

    def __init__(self, client: Client, delegation_id: str, heartbeat_interval: Optional[float] = None,
                 global_heartbeat_timeout: float = 600.0,
                 on_beat: Optional[Callable[[HeartbeatResult], None]] = None):
        self.client = client
        self.delegation_id = delegation_id
        self.delegation: Optional[Delegation] = None
        self.cancelled = threading.Event()
        self.status: Optional[str] = None
        self.reason: Optional[str] = None
        self.result: Optional[str] = None
        self.outcome: Optional[str] = None
        self._interval = heartbeat_interval
        self._global_timeout = global_heartbeat_timeout
        self._on_beat = on_beat
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self._progress: Optional[Dict[str, Any]] = None

    def __enter__(self) -> "Task":
        try:
            self.client.transition(self.delegation_id, "in_progress", reason="worker started")
        except ProblemError as p:
            if p.status == 409:
                d = self._read()
                raise NotLiveError(self.delegation_id, d.status if d else p.current_status,
                                   d.stuck_reason if d else "") from None
            raise
        self.delegation = self.client.get(self.delegation_id)
        if self.delegation.terminal:
            raise NotLiveError(self.delegation_id, self.delegation.status, self.delegation.stuck_reason)
        interval = self._interval
        if interval is None:
            timeout = self.delegation.heartbeat_timeout_seconds or self._global_timeout
            interval = max(timeout / 3.0, 0.001)
        self._thread = threading.Thread(target=self._beat, args=(interval,),
                                        name="sweeper-heartbeat-" + self.delegation_id, daemon=True)
        self._thread.start()
        return self

    def progress(self, progress: Dict[str, Any]) -> None:
        """Sets the progress the next heartbeat reports (a dict, at most
        8 KiB as JSON): it replaces the delegation's progress. A delegation
        whose progress stops changing for its progress timeout is marked
        stuck (stalled), however often it heartbeats."""
        if not isinstance(progress, dict):
            raise TypeError("progress must be a dict (a JSON object), got %s" % type(progress).__name__)
        with self._lock:
            self._progress = progress

    def _take_progress(self) -> Optional[Dict[str, Any]]:
        with self._lock:
            p, self._progress = self._progress, None
            return p

    def _read(self) -> Optional[Delegation]:
        try:
            return self.client.get(self.delegation_id)
        except ProblemError as p:
            if p.status == 404:
                return None
            raise

    def _not_live(self, status: Optional[str]) -> None:
        stuck_reason = ""
        try:
            d = self._read()
            status = d.status if d else None
            stuck_reason = d.stuck_reason if d else ""
        except Exception:  # the status the heartbeat gave is enough
            pass
        self.status = status
        self.reason = describe_not_live(self.delegation_id, status, stuck_reason)
        self.cancelled.set()

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                beat = self.client.heartbeat(self.delegation_id, progress=self._take_progress())
            except ProblemError as p:
                if p.status == 404:
                    self._not_live(None)
                    return
                log.warning("heartbeat of %s failed: %s", self.delegation_id, p)
                continue
            except OSError as e:  # the next beat tries again
                log.warning("heartbeat of %s failed: %s", self.delegation_id, e)
                continue
            if self._on_beat is not None:
                self._on_beat(beat)
            if not beat.live:
                self._not_live(beat.status)
                return

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.cancelled.is_set():
            self.outcome = "not_live"
            return False
        try:
            if exc_type is None:
                self.client.transition(self.delegation_id, "completed", result=self.result, reason="work done")
                self.outcome = "completed"
            else:
                text = "".join(traceback.format_exception_only(exc_type, exc)).strip()
                self.client.transition(self.delegation_id, "failed", error=text, reason="work failed")
                self.outcome = "failed"
        except ProblemError as p:
            if p.status not in (404, 409):
                raise
            self._not_live(p.current_status)
            self.outcome = "not_live"
        return False
