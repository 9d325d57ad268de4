"""Tests of sweeper_client against a real daemon and PostgreSQL.

Run by clients/python/client_test.go (make test), which starts the daemon
and sets: SWEEPER_API, SWEEPER_LIMITED_API (a daemon with api.rate_limit 1),
and the tokens SWEEPER_ADMIN_TOKEN, SWEEPER_CALLER_TOKEN (caller billing),
SWEEPER_WORKER_TOKEN (worker agent-a), SWEEPER_READER_TOKEN.
"""

import datetime
import itertools
import os
import threading
import unittest
import uuid

import sweeper_client
from sweeper_client import Client, NotLiveError, ProblemError

API = os.environ.get("SWEEPER_API")
WAIT = 60  # seconds: the bound of every wait on the daemon


def uid(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:10])


@unittest.skipUnless(API, "SWEEPER_API is not set: run through go test ./clients/python/")
class ClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.admin = Client(API, os.environ["SWEEPER_ADMIN_TOKEN"])
        cls.caller = Client(API, os.environ["SWEEPER_CALLER_TOKEN"])
        cls.worker = Client(API, os.environ["SWEEPER_WORKER_TOKEN"])
        cls.reader = Client(API, os.environ["SWEEPER_READER_TOKEN"])

    def insert(self, **kw):
        id_ = uid(kw.pop("prefix", "py"))
        res = self.caller.insert(id_, callee_id="agent-a", task_preview="task " + id_, **kw)
        self.assertEqual(res.outcome, "inserted")
        return id_

    def test_repr_hides_the_token(self):
        self.assertNotIn(os.environ["SWEEPER_CALLER_TOKEN"], repr(self.caller))

    def test_every_read_endpoint_is_typed(self):
        deadline = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
        id_ = self.insert(idempotency_key=uid("key"), deadline=deadline, heartbeat_timeout_seconds=90)
        again = self.caller.insert(id_, callee_id="agent-a")
        self.assertEqual((again.outcome, again.delegation_id), ("already_exists", id_))

        d = self.caller.get(id_)
        self.assertIsInstance(d, sweeper_client.Delegation)
        self.assertEqual((d.caller_id, d.callee_id, d.status, d.attempt), ("billing", "agent-a", "queued", 1))
        self.assertEqual(d.heartbeat_timeout_seconds, 90)
        self.assertEqual(d.deadline.tzinfo is not None, True)
        self.assertLess(abs((d.deadline - deadline).total_seconds()), 1e-3)
        self.assertFalse(d.terminal)

        ids = [self.insert(prefix="page") for _ in range(3)]
        page = self.caller.list(caller_id="billing", limit=2)
        self.assertEqual(len(page.delegations), 2)
        self.assertTrue(page.next_cursor)
        self.assertEqual([x.delegation_id for x in page.delegations], ids[::-1][:2])
        everything = [x.delegation_id for x in self.caller.list_all(caller_id="billing", in_flight=True, limit=2)]
        self.assertTrue(set(ids + [id_]) <= set(everything))

        evs = self.reader.events(id_)
        self.assertEqual([(e.from_status, e.to_status, e.actor) for e in evs], [("", "queued", "api:billing")])
        self.assertIsInstance(evs[0].at, datetime.datetime)

        s = self.caller.summary()
        self.assertGreaterEqual(s.in_flight, 4)
        self.assertEqual([c.caller_id for c in s.by_caller], ["billing"])
        self.assertGreaterEqual(s.by_status.queued, 4)

        self.assertIn("/v1/delegations", self.reader.openapi()["paths"])

    def test_problems_carry_their_fields(self):
        with self.assertRaises(ProblemError) as cm:
            self.reader.get(uid("missing"))
        p = cm.exception
        self.assertEqual((p.status, p.slug, p.type), (404, "not-found", "urn:sweeper:problem:not-found"))
        self.assertTrue(p.instance.startswith("/v1/delegations/"))

        with self.assertRaises(ProblemError) as cm:
            self.caller.insert("   ", callee_id="agent-a")
        self.assertEqual((cm.exception.status, cm.exception.slug, cm.exception.field),
                         (422, "invalid-field", "delegation_id"))

        id_ = self.insert()
        self.worker.transition(id_, "completed", result="done")
        with self.assertRaises(ProblemError) as cm:
            self.worker.transition(id_, "failed", error="late")
        p = cm.exception
        self.assertEqual((p.status, p.outcome, p.current_status), (409, "rejected_terminal", "completed"))

        with self.assertRaises(ProblemError) as cm:
            self.reader.insert(uid("r"), callee_id="agent-a")
        self.assertEqual(cm.exception.status, 403)

        with self.assertRaises(ValueError):
            self.caller.insert(uid("naive"), callee_id="agent-a", deadline=datetime.datetime.now())

    def test_transitions_heartbeats_retry_and_attempts(self):
        id_ = self.insert()
        self.assertEqual(self.worker.transition(id_, "in_progress").outcome, "applied")
        self.assertEqual(self.worker.transition(id_, "in_progress").outcome, "unchanged")
        hb = self.worker.heartbeat(id_)
        self.assertEqual((hb.live, hb.status), (True, "in_progress"))
        done = self.insert()
        self.worker.transition(done, "failed", error="no disk")
        nope = uid("nope")
        self.assertEqual(sorted(self.worker.heartbeats([id_, done, nope])), sorted([done, nope]))
        self.assertEqual(self.worker.heartbeats(beats=[(id_, {"step": 2}), (done, {"step": 9})]), [done])
        self.assertEqual(self.reader.get(id_).progress, {"step": 2})
        self.assertTrue(self.worker.heartbeat(id_, progress={"step": 3}).live)
        self.assertEqual(self.reader.get(id_).progress, {"step": 3})
        self.assertFalse(self.worker.heartbeat(done).live)

        r = self.caller.retry(done, reason="try again")
        self.assertEqual((r.outcome, r.attempt, r.delegation_id), ("created", 2, done + "#2"))
        self.assertEqual(self.caller.retry(done).outcome, "already_retried")
        chain = self.caller.attempts(done + "#2")
        self.assertEqual([(a.delegation_id, a.attempt, a.retry_of) for a in chain],
                         [(done, 1, ""), (done + "#2", 2, done)])
        with self.assertRaises(ProblemError) as cm:
            self.caller.retry(id_)
        self.assertEqual((cm.exception.status, cm.exception.outcome), (409, "not_retryable"))

    def test_claims_and_retry_policies(self):
        # A dedicated callee: other tests' queued rows stay out of the claims.
        admin = self.admin
        callee = uid("claimer")
        policy = sweeper_client.RetryPolicy(max_attempts=2, backoff_seconds=0.01, on=["failed"])
        id_ = uid("pol")
        admin.insert(id_, caller_id="billing", callee_id=callee, retry=policy)
        d = admin.get(id_)
        self.assertEqual((d.retry.max_attempts, d.retry.on), (2, ["failed"]))
        claimed = admin.claim(10, callee_id=callee)
        self.assertEqual([(c.delegation_id, c.status) for c in claimed], [(id_, "dispatched")])
        self.assertEqual(admin.claim(10, callee_id=callee), [])
        admin.transition(id_, "failed", error="boom")
        nxt = []
        for _ in range(1000):  # due 10 ms (+-10%) after the failure
            nxt = admin.claim(10, callee_id=callee)
            if nxt:
                break
        self.assertEqual([(n.retry_of, n.attempt) for n in nxt], [(id_, 2)])
        admin.transition(nxt[0].delegation_id, "failed")
        ex = admin.list(callee_id=callee, exhausted=True)
        self.assertEqual([(x.delegation_id, x.exhausted) for x in ex.delegations], [(nxt[0].delegation_id, True)])
        with self.assertRaises(ProblemError) as cm:
            self.worker.claim(1, callee_id=callee)
        self.assertEqual(cm.exception.status, 403)

    def beats(self):
        """An on_beat callback and a function that waits for the n-th live beat."""
        cond = threading.Condition()
        live = []

        def on_beat(b):
            with cond:
                live.append(b.live)
                cond.notify_all()

        def wait_live(n):
            with cond:
                ok = cond.wait_for(lambda: live.count(True) >= n, timeout=WAIT)
            self.assertTrue(ok, "no %d live heartbeats within %ds" % (n, WAIT))
        return on_beat, wait_live

    def test_webhooks(self):
        url = "https://hooks.example.com/" + uid("py")
        created = self.admin.create_webhook(url, events=["stuck", "failed"], callee_id="agent-a")
        self.assertIsInstance(created, sweeper_client.WebhookSubscription)
        self.assertTrue(created.id.startswith("wh_"))
        self.assertTrue(created.secret.startswith("whsec_"))
        self.assertNotIn(created.secret, repr(created))
        self.assertEqual((created.url, created.events, created.callee_id, created.state, created.extra),
                         (url, ["stuck", "failed"], "agent-a", "active", {}))
        self.assertIsInstance(created.created_at, datetime.datetime)
        with self.assertRaises(ProblemError) as cm:
            self.caller.create_webhook("https://hooks.example.com/x")
        self.assertEqual(cm.exception.status, 403)
        with self.assertRaises(ProblemError) as cm:
            self.admin.create_webhook("ftp://hooks.example.com/x")
        self.assertEqual((cm.exception.status, cm.exception.slug), (422, "invalid-field"))

        listed = {w.id: w for w in self.admin.webhooks()}
        self.assertEqual(listed[created.id].url, url)
        self.assertEqual(listed[created.id].secret, "")
        got = self.admin.webhook(created.id)
        self.assertEqual((got.id, got.cursor, got.secret, got.extra), (created.id, created.cursor, "", {}))

        rotated = self.admin.rotate_webhook_secret(created.id)
        self.assertTrue(rotated.secret.startswith("whsec_"))
        self.assertNotEqual(rotated.secret, created.secret)
        self.assertIsInstance(rotated.rotation_ends_at, datetime.datetime)
        self.assertEqual(self.admin.resume_webhook(created.id).state, "active")
        self.assertEqual(self.admin.webhook_attempts(created.id, limit=5), [])

        self.assertIsNone(self.admin.delete_webhook(created.id))
        with self.assertRaises(ProblemError) as cm:
            self.admin.webhook(created.id)
        self.assertEqual(cm.exception.status, 404)

    def test_task_completes_with_its_result(self):
        id_ = self.insert()
        on_beat, wait_live = self.beats()
        before = None
        with self.worker.task(id_, heartbeat_interval=0.02, on_beat=on_beat) as t:
            self.assertEqual(t.delegation.status, "in_progress")
            before = self.reader.get(id_).last_heartbeat
            with self.assertRaises(TypeError):
                t.progress(["not", "an", "object"])
            t.progress({"page": 3})
            wait_live(2)  # the beat after the one that took the progress
            self.assertFalse(t.cancelled.is_set())
            d = self.reader.get(id_)
            self.assertEqual(d.progress, {"page": 3})
            self.assertIsNotNone(d.progress_at)
            t.result = "invoice.pdf"
        self.assertEqual(t.outcome, "completed")
        d = self.reader.get(id_)
        self.assertEqual((d.status, d.result_preview), ("completed", "invoice.pdf"))
        self.assertGreater(d.last_heartbeat, before)
        self.assertEqual([(e.to_status, e.actor) for e in self.reader.events(id_)],
                         [("queued", "api:billing"), ("in_progress", "api:agent"), ("completed", "api:agent")])

    def test_task_fails_with_the_exception(self):
        id_ = self.insert()
        with self.assertRaises(KeyError):
            with self.worker.task(id_) as t:
                raise KeyError("font")
        self.assertEqual(t.outcome, "failed")
        d = self.reader.get(id_)
        self.assertEqual((d.status, d.error_detail), ("failed", "KeyError: 'font'"))

    def test_task_cancelled_when_the_sweeper_marks_it_stuck(self):
        id_ = self.insert(timeout_seconds=1)  # the daemon sweeps every second
        with self.worker.task(id_, heartbeat_interval=0.05) as t:
            self.assertTrue(t.cancelled.wait(WAIT), "not cancelled within %ds" % WAIT)
        self.assertEqual((t.outcome, t.status), ("not_live", "stuck"))
        self.assertIn("was marked stuck (deadline_exceeded)", t.reason)
        self.assertEqual(self.reader.get(id_).status, "stuck")
        hb = self.worker.heartbeat(id_)
        self.assertEqual((hb.live, hb.status, hb.reason), (False, "stuck", "deadline_exceeded"))

    def test_task_cancelled_when_its_progress_stalls(self):
        # Heartbeats without progress: the stalled rule marks it stuck.
        id_ = self.insert(progress_timeout_seconds=1)
        self.assertEqual(self.reader.get(id_).progress_timeout_seconds, 1)
        with self.worker.task(id_, heartbeat_interval=0.05) as t:
            self.assertTrue(t.cancelled.wait(WAIT), "not cancelled within %ds" % WAIT)
        self.assertEqual((t.outcome, t.status), ("not_live", "stuck"))
        self.assertIn("was marked stuck (stalled)", t.reason)

    def test_task_cancelled_when_failed_by_its_caller(self):
        id_ = self.insert()
        on_beat, wait_live = self.beats()
        with self.worker.task(id_, heartbeat_interval=0.02, on_beat=on_beat) as t:
            wait_live(1)
            self.caller.transition(id_, "failed", error="cancelled by the user")
            self.assertTrue(t.cancelled.wait(WAIT))
        self.assertEqual((t.outcome, t.status), ("not_live", "failed"))
        self.assertIn("failed elsewhere", t.reason)
        self.assertEqual(self.reader.get(id_).error_detail, "cancelled by the user")

    def test_task_refuses_what_is_not_live(self):
        id_ = self.insert()
        self.worker.transition(id_, "completed")
        with self.assertRaises(NotLiveError) as cm:
            with self.worker.task(id_):
                self.fail("the body ran")
        self.assertEqual(cm.exception.status, "completed")
        with self.assertRaises(ProblemError) as cm:
            with self.worker.task(uid("missing")):
                self.fail("the body ran")
        self.assertEqual(cm.exception.status, 404)

    def test_follow_resumes_from_a_cursor(self):
        caller = uid("follower")
        for i in range(3):
            self.admin.insert(uid("f%d" % i), caller_id=caller, callee_id="agent-a")
        everything = [e.id for e in self.reader.feed(caller_id=caller).events]
        self.assertEqual(len(everything), 3)
        first = list(itertools.islice(self.reader.follow(caller_id=caller, wait=5), 2))
        rest = list(itertools.islice(self.reader.follow(after=first[-1].id, caller_id=caller, wait=5), 1))
        self.assertEqual([e.id for e in first + rest], everything)
        self.assertTrue(all(isinstance(e, sweeper_client.Event) and e.caller_id == caller for e in first + rest))
        # A long poll is woken by the next event.
        follower = self.reader.follow(after=everything[-1], caller_id=caller, wait=WAIT)
        got = []
        t = threading.Thread(target=lambda: got.append(next(follower)))
        t.start()
        late = uid("late")
        self.admin.insert(late, caller_id=caller, callee_id="agent-a")
        t.join(WAIT)
        self.assertEqual([e.delegation_id for e in got], [late])


@unittest.skipUnless(os.environ.get("SWEEPER_LIMITED_API"), "SWEEPER_LIMITED_API is not set")
class RetryTest(unittest.TestCase):
    def test_429_is_retried_after_retry_after(self):
        slept = []
        c = Client(os.environ["SWEEPER_LIMITED_API"], os.environ["SWEEPER_READER_TOKEN"],
                   sleep=lambda s: (slept.append(s), __import__("time").sleep(s)))
        for _ in range(3):  # rate 1/s, burst 1: the second and third wait
            c.summary()
        self.assertGreaterEqual(c.retries, 2)
        self.assertTrue(all(s >= 1 for s in slept), slept)

        impatient = Client(os.environ["SWEEPER_LIMITED_API"], os.environ["SWEEPER_READER_TOKEN"], max_retries=0)
        with self.assertRaises(ProblemError) as cm:
            impatient.summary()
            impatient.summary()
        p = cm.exception
        self.assertEqual((p.status, p.slug), (429, "rate-limited"))
        self.assertGreaterEqual(p.retry_after, 1)


class OfflineTest(unittest.TestCase):
    """What needs no daemon."""

    SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    BODY = b'{"test": 2432232314}'
    HEADERS = {"webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp": "1614265330",
               "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="}

    def test_verify_webhook_standard_example(self):
        # The example of the Standard Webhooks specification.
        got = sweeper_client.verify_webhook(self.SECRET, self.HEADERS, self.BODY, now=1614265330)
        self.assertEqual(got, {"test": 2432232314})
        upper = {k.upper(): v for k, v in self.HEADERS.items()}
        self.assertEqual(sweeper_client.verify_webhook(self.SECRET, upper, self.BODY, now=1614265330 + 299),
                         {"test": 2432232314})
        # During a rotation the header carries several signatures.
        rotated = dict(self.HEADERS, **{"webhook-signature": "v1,bm90IHRoaXM= " + self.HEADERS["webhook-signature"]})
        sweeper_client.verify_webhook(self.SECRET, rotated, self.BODY, now=1614265330)

    def test_verify_webhook_refuses(self):
        bad = sweeper_client.WebhookVerificationError
        cases = {
            "tampered body": (self.SECRET, self.HEADERS, b'{"test": 2432232315}', 1614265330),
            "other secret": ("whsec_" + "A" * 32, self.HEADERS, self.BODY, 1614265330),
            "too old": (self.SECRET, self.HEADERS, self.BODY, 1614265330 + 301),
            "from the future": (self.SECRET, self.HEADERS, self.BODY, 1614265330 - 301),
            "no signature header": (self.SECRET, {k: v for k, v in self.HEADERS.items() if k != "webhook-signature"},
                                    self.BODY, 1614265330),
            "v2 only": (self.SECRET, dict(self.HEADERS, **{"webhook-signature": "v2," + self.HEADERS["webhook-signature"][3:]}),
                        self.BODY, 1614265330),
        }
        for name, (secret, headers, body, now) in cases.items():
            with self.subTest(name):
                with self.assertRaises(bad):
                    sweeper_client.verify_webhook(secret, headers, body, now=now)

    def test_parse_time(self):
        from sweeper_client._models import parse_time
        utc = datetime.timezone.utc
        for text, want in {
            "2026-12-07T18:50:57Z": datetime.datetime(2026, 12, 7, 18, 50, 57, tzinfo=utc),
            "2026-12-07T18:50:57.5Z": datetime.datetime(2026, 12, 7, 18, 50, 57, 500000, tzinfo=utc),
            "2026-12-07T18:50:57.123456789+01:00": datetime.datetime(2026, 12, 7, 17, 50, 57, 123456, tzinfo=utc),
        }.items():
            self.assertEqual(parse_time(text), want, text)
        with self.assertRaises(ValueError):
            parse_time("yesterday")

    def test_unknown_fields_are_kept(self):
        e = sweeper_client.Event.from_json({"id": 1, "delegation_id": "d", "to_status": "queued", "actor": "a",
                                            "at": "2026-12-07T18:50:57Z", "caller_id": "c", "callee_id": "w",
                                            "progress": {"done": 3}})
        self.assertEqual(e.extra, {"progress": {"done": 3}})


if __name__ == "__main__":
    unittest.main()
