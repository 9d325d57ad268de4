"""Typed answers of the API: one dataclass per schema of /v1/openapi.json.

Fields the server adds in later versions are kept in ``extra`` rather than
refused, so an older client keeps working against a newer daemon.
"""

import dataclasses
import datetime
import re
from typing import Any, Callable, Dict, List, Optional, Tuple

__all__ = [
    "RetryPolicy", "Delegation", "Event", "InsertResult", "TransitionResult", "HeartbeatResult",
    "RetryResult", "DelegationPage", "FeedPage", "Counts", "CallerSummary", "Summary",
    "WebhookSubscription", "WebhookAttempt",
]

_TS = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def parse_time(s: Optional[str]) -> Optional[datetime.datetime]:
    """An RFC 3339 timestamp as an aware datetime (microseconds kept);
    Python 3.9's fromisoformat reads neither "Z" nor 1-9 fraction digits."""
    if s is None:
        return None
    m = _TS.match(s)
    if not m:
        raise ValueError("not an RFC 3339 timestamp: %r" % s)
    base, frac, zone = m.groups()
    frac = ((frac or "") + "000000")[:6]
    zone = "+00:00" if zone == "Z" else zone
    return datetime.datetime.fromisoformat("%s.%s%s" % (base, frac, zone))


def format_time(t: datetime.datetime) -> str:
    """An aware datetime as RFC 3339 (naive datetimes are refused: the
    server would have to guess their zone)."""
    if t.tzinfo is None:
        raise ValueError("deadline must be timezone-aware (e.g. datetime.now(timezone.utc))")
    return t.isoformat()


def _build(cls, data: Dict[str, Any], times=(), nested=None):
    known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
    kwargs: Dict[str, Any] = {}
    extra: Dict[str, Any] = {}
    for k, v in data.items():
        if k not in known:
            extra[k] = v
        elif k in times:
            kwargs[k] = parse_time(v)
        elif nested and k in nested:
            kwargs[k] = nested[k](v)
        else:
            kwargs[k] = v
    kwargs["extra"] = extra
    return cls(**kwargs)


class _Model:
    """What every model shares: ``from_json`` builds one from the API's JSON
    (``_build``), parsing the fields named in ``_times`` as timestamps and
    those in ``_nested`` with their function."""
    _times: Tuple[str, ...] = ()
    _nested: Dict[str, Callable[[Any], Any]] = {}

    @classmethod
    def from_json(cls, d: Dict[str, Any]):
        """The model of the API's JSON object d (unknown keys in ``extra``)."""
        return _build(cls, d, times=cls._times, nested=cls._nested)


@dataclasses.dataclass
class RetryPolicy(_Model):
    """How a delegation retries itself: when an attempt moves to a status in
    ``on`` and its attempt is below ``max_attempts``, the database inserts
    the next attempt, queued, due after min(backoff_max_seconds,
    backoff_seconds * 2^(n-1)) +-10%. None fields take the server's
    defaults (1 attempt, 30 s, 1 h, ["stuck"])."""
    max_attempts: Optional[int] = None
    backoff_seconds: Optional[float] = None
    backoff_max_seconds: Optional[float] = None
    on: Optional[List[str]] = None
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)


    def to_json(self) -> Dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None and k != "extra"}


@dataclasses.dataclass
class Delegation(_Model):
    """One delegation (a row of the ledger)."""
    delegation_id: str
    caller_id: str
    callee_id: str
    task_preview: str
    status: str
    deadline: datetime.datetime
    created_at: datetime.datetime
    updated_at: datetime.datetime
    result_preview: str = ""
    error_detail: str = ""
    idempotency_key: str = ""
    last_heartbeat: Optional[datetime.datetime] = None
    stuck_reason: str = ""
    attempt: int = 1
    retry_of: str = ""
    heartbeat_timeout_seconds: Optional[float] = None
    #: The worker's latest progress report, and when it last changed.
    progress: Optional[Dict[str, Any]] = None
    progress_at: Optional[datetime.datetime] = None
    #: A queued delegation is not due before not_before (a retry's backoff).
    not_before: Optional[datetime.datetime] = None
    dispatched_at: Optional[datetime.datetime] = None
    progress_timeout_seconds: Optional[float] = None
    queue_timeout_seconds: Optional[float] = None
    start_timeout_seconds: Optional[float] = None
    #: The retry policy, copied to every attempt; exhausted marks an
    #: attempt whose policy had retries and used them all.
    retry: Optional[RetryPolicy] = None
    exhausted: bool = False
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)

    _times = ("deadline", "created_at", "updated_at", "last_heartbeat",
              "progress_at", "not_before", "dispatched_at")
    _nested = {"retry": RetryPolicy.from_json}

    @property
    def terminal(self) -> bool:
        return self.status in ("completed", "failed", "stuck")


@dataclasses.dataclass
class Event(_Model):
    """One status change of a delegation (the audit log and the feed)."""
    id: int
    delegation_id: str
    to_status: str
    actor: str
    at: datetime.datetime
    caller_id: str
    callee_id: str
    from_status: str = ""
    reason: str = ""
    detail: Any = None
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)

    _times = ("at",)


@dataclasses.dataclass
class InsertResult(_Model):
    """What an insert did: inserted, already_exists, duplicate_key or retried."""
    outcome: str
    delegation_id: str
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)



@dataclasses.dataclass
class TransitionResult(_Model):
    """A status change that was applied, or a replay (unchanged)."""
    outcome: str
    status: str
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)



@dataclasses.dataclass
class HeartbeatResult(_Model):
    """live is False when the delegation is terminal: its worker should
    stop; reason says why a stuck one was marked stuck."""
    live: bool
    status: str
    reason: str = ""
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)



@dataclasses.dataclass
class RetryResult(_Model):
    """The next attempt: created now, or already_retried (an earlier one)."""
    outcome: str
    delegation_id: str
    attempt: int
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)



@dataclasses.dataclass
class DelegationPage(_Model):
    """One page of a list, newest first; next_cursor continues ("" at the end)."""
    delegations: List[Delegation]
    next_cursor: str = ""
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)

    _nested = {"delegations": lambda v: [Delegation.from_json(x) for x in v]}


@dataclasses.dataclass
class FeedPage(_Model):
    """One page of the durable feed. next_after is the cursor to ask from
    next; pending says matching events wait for an older transaction."""
    events: List[Event]
    next_after: int
    pending: bool
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)

    _nested = {"events": lambda v: [Event.from_json(x) for x in v]}


@dataclasses.dataclass
class Counts(_Model):
    """In-flight delegations per status."""
    queued: int
    dispatched: int
    in_progress: int
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)



@dataclasses.dataclass
class CallerSummary(_Model):
    """One caller's in-flight delegations."""
    caller_id: str
    in_flight: int
    by_status: Counts
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)

    _nested = {"by_status": Counts.from_json}


@dataclasses.dataclass
class Summary(_Model):
    """What is in flight, in total, per status and per caller."""
    in_flight: int
    by_status: Counts
    by_caller: List[CallerSummary]
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)

    _nested = {
        "by_status": Counts.from_json,
        "by_caller": lambda v: [CallerSummary.from_json(x) for x in v],
    }


_WEBHOOK_TIMES = ("failing_since", "next_attempt_at", "last_delivery_at", "rotation_ends_at",
                  "created_at", "updated_at")


@dataclasses.dataclass
class WebhookSubscription(_Model):
    """A webhook subscription (schema WebhookSubscription). ``secret`` is
    set only in the answers of create_webhook and rotate_webhook_secret
    (schema WebhookSecret): store it then, the API never shows it again."""
    id: str
    url: str
    events: List[str]
    #: active, paused (its head event failed for webhooks.max_retry_age) or
    #: disabled (the endpoint answered 410).
    state: str
    #: The id of the last event delivered or passed over.
    cursor: int
    failed_attempts: int
    created_at: datetime.datetime
    updated_at: datetime.datetime
    caller_id: str = ""
    callee_id: str = ""
    state_reason: str = ""
    failing_since: Optional[datetime.datetime] = None
    next_attempt_at: Optional[datetime.datetime] = None
    last_delivery_at: Optional[datetime.datetime] = None
    #: While a rotation lasts, when the previous secret stops signing.
    rotation_ends_at: Optional[datetime.datetime] = None
    lease_owner: str = ""
    secret: str = dataclasses.field(default="", repr=False)
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)

    _times = _WEBHOOK_TIMES


@dataclasses.dataclass
class WebhookAttempt(_Model):
    """One delivery attempt of a subscription (schema WebhookAttempt)."""
    id: int
    #: The event delivered, and the webhook-id header sent (evt_<event_id>).
    event_id: int
    webhook_id: str
    at: datetime.datetime
    latency_ms: int
    #: delivered, failed, gone or refused.
    outcome: str
    #: The endpoint's status; None when no answer came.
    status_code: Optional[int] = None
    error: str = ""
    response: str = ""
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)

    _times = ("at",)
