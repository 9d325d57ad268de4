"""Client of sweeper's ledger HTTP API (docs/api.md), standard library only.

    from sweeper_client import Client

    caller = Client("http://127.0.0.1:8080", caller_token)
    caller.insert("task-42", callee_id="agent-a", task_preview="render invoice")

    worker = Client("http://127.0.0.1:8080", worker_token)
    with worker.task("task-42") as t:       # in_progress, heartbeats in a thread
        ...                                 # stop when t.cancelled.is_set()
        t.result = "invoice.pdf"            # completed on a clean exit, failed on an exception

    for d in worker.claim(10):              # due work of the worker's callee, now dispatched
        ...

    for ev in reader.follow(after=cursor):  # the durable feed, resumable
        ...

Errors are ProblemError (RFC 9457 problem details); answers 429 and 503 are
retried after their Retry-After.
"""

from ._client import Client, NotLiveError, ProblemError, Task
from ._models import (
    CallerSummary, Counts, Delegation, DelegationPage, Event, FeedPage, HeartbeatResult,
    InsertResult, RetryPolicy, RetryResult, Summary, TransitionResult, WebhookAttempt,
    WebhookSubscription,
)
from ._version import __version__
from ._webhook import WebhookVerificationError, sign_webhook, verify_webhook

__all__ = [
    "Client", "ProblemError", "NotLiveError", "Task",
    "RetryPolicy", "Delegation", "Event", "InsertResult", "TransitionResult", "HeartbeatResult", "RetryResult",
    "DelegationPage", "FeedPage", "Counts", "CallerSummary", "Summary",
    "WebhookSubscription", "WebhookAttempt",
    "verify_webhook", "sign_webhook", "WebhookVerificationError", "__version__",
]
