"""The checker's own tests: synthetic episodes where the verdict is known, so each rule is
shown to fire on a violation and to stay quiet on a clean run.

    python3 -m unittest campaign/test_checker.py
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import checker  # noqa: E402

EP = {"cell": {"qos": 1, "session": "clean", "protocol": "5"}, "env": None, "faults": "t"}


def ctx(**kw):
    base = {"heals": [], "broker_kills": [], "stall_bound": 16, "ready_bound": 12,
            "end": 100.0, "dead_at_start": 0, "last_start": 0.0, "protocols": ["p5"],
            "outage_peak_rss": 0, "outage_mib": 0, "unexpected_exits": [],
            "extra_violations": [], "refused_start": False, "conns_after_heal": 1}
    base.update(kw)
    return base


def answers(n, client=0, status=202, kind="normal", t0=1.0):
    return {f"{client}-{i}": {"kind": kind, "client": client, "n": i, "name": f"c{client}",
                              "status": status, "t": t0 + i * 0.01} for i in range(1, n + 1)}


def arrivals(ids, t0=2.0):
    return [(t0 + k * 0.01, "cp/c0", i, False) for k, i in enumerate(ids)]


def metrics(records=0, accepted=None, dead=0):
    m = {"mqlink_spool_records": records, "mqlink_dead_lettered": dead}
    if accepted is not None:
        m["mqlink_events_accepted"] = accepted
    return m


class CheckerTest(unittest.TestCase):
    def run_check(self, a, arr, dead=(), m=None, samples=(), ep=EP, **kw):
        return checker.check(ep, a, arr, list(dead), m if m is not None else metrics(),
                             list(samples), ctx(**kw))

    def test_a_clean_episode_has_no_violation(self):
        a = answers(10)
        row, v = self.run_check(a, arrivals(list(a)), m=metrics(accepted=10))
        self.assertEqual(v, [])
        self.assertEqual((row["accepted"], row["delivered"], row["lost"]), (10, 10, 0))

    def test_a_missing_event_with_an_empty_spool_is_lost(self):
        a = answers(10)
        row, v = self.run_check(a, arrivals(list(a)[:-1]))
        self.assertEqual(row["lost"], 1)
        self.assertTrue(any(x.startswith("safety: 1 accepted") for x in v), v)

    def test_a_missing_event_with_records_in_the_spool_is_stuck(self):
        a = answers(10)
        row, v = self.run_check(a, arrivals(list(a)[:-2]), m=metrics(records=2))
        self.assertEqual(row["stuck"], 2)
        self.assertTrue(any(x.startswith("liveness") for x in v), v)

    def test_a_dead_lettered_event_is_not_lost_but_a_transient_code_is_a_violation(self):
        a = answers(3)
        dead = [{"code": 0x87, "reason": "not authorized", "payload": '{"id": "0-3"}'}]
        row, v = self.run_check(a, arrivals(["0-1", "0-2"]), dead, m=metrics(dead=1))
        self.assertEqual((row["lost"], row["dead_lettered"]), (0, 1))
        dead = [{"code": 0x97, "reason": "quota exceeded", "payload": {"id": "0-3"}}]
        _, v = self.run_check(a, arrivals(["0-1", "0-2"]), dead, m=metrics(dead=1))
        self.assertTrue(any("transient refusal 0x97" in x for x in v), v)

    def test_out_of_order_first_arrivals_are_a_violation_duplicates_are_counted(self):
        a = answers(3)
        row, v = self.run_check(a, arrivals(["0-1", "0-3", "0-2", "0-3"]))
        self.assertEqual(row["duplicates"], 1)
        self.assertTrue(any("out of order" in x for x in v), v)

    def test_losses_before_a_broker_kill_are_the_brokers(self):
        a = answers(10)
        row, v = self.run_check(a, arrivals(list(a)[:5]), broker_kills=[1.5])
        self.assertEqual((row["lost"], row["broker_lost"]), (0, 5))
        self.assertEqual(v, [])

    def test_a_long_stall_after_heal_is_a_liveness_violation(self):
        a = answers(10)
        arr = arrivals(list(a)[:5]) + [(40.0 + k, "cp/c0", i, False)
                                       for k, i in enumerate(list(a)[5:])]
        row, v = self.run_check(a, arr, heals=[3.0])
        self.assertGreater(row["max_stall"], 30)
        self.assertTrue(any("resumed" in x for x in v), v)

    def test_ready_while_owed_events_do_not_arrive_is_a_lie(self):
        a = answers(10)
        arr = arrivals(list(a)[:5]) + [(40.0, "cp/c0", i, False) for i in list(a)[5:]]
        samples = [(2.0 + k * 0.25, True, 1000, 0, True) for k in range(140)]
        row, v = self.run_check(a, arr, samples=samples)
        self.assertGreater(row["ready_lie"], 12)
        self.assertTrue(any("/readyz" in x for x in v), v)
        quiet = [(t, False, r, n, al) for t, _, r, n, al in samples]
        _, v = self.run_check(a, arr, samples=quiet)
        self.assertFalse(any("/readyz" in x for x in v), v)

    def test_filtered_events_answered_503_and_a_protocol_fallback_are_dishonest(self):
        a = answers(3)
        a.update(answers(2, client=1, status=503, kind="xfilt"))
        ep = dict(EP, env="filtered")
        _, v = self.run_check(a, arrivals(["0-1", "0-2", "0-3"]), ep=ep,
                              protocols=["p5", "p2"])
        self.assertTrue(any("503" in x for x in v), v)
        self.assertTrue(any("3.1.1" in x for x in v), v)

    def test_counters_must_match_what_clients_and_the_file_saw(self):
        a = answers(4)
        _, v = self.run_check(a, arrivals(list(a)), m=metrics(accepted=3, dead=1))
        self.assertTrue(any("mqlink_events_accepted=3" in x for x in v), v)
        self.assertTrue(any("mqlink_dead_lettered=1" in x for x in v), v)

    def test_ingest_that_never_recovers_after_heal_is_a_liveness_violation(self):
        a = answers(10)
        a.update(answers(5, client=1, status=503, t0=10.0))
        _, v = self.run_check(a, arrivals(list(answers(10))), heals=[9.0], load_end=10.1)
        self.assertTrue(any("no event accepted" in x for x in v), v)
        a.update(answers(1, client=2, t0=10.05))
        _, v = self.run_check(a, arrivals(list(answers(10)) + ["2-1"]), heals=[9.0],
                              load_end=10.1)
        self.assertFalse(any("no event accepted" in x for x in v), v)

    def test_reconnect_loop_and_rss_bound(self):
        a = answers(2)
        ep = dict(EP, env="outage_rss")
        _, v = self.run_check(a, arrivals(list(a)), ep=ep, conns_after_heal=40,
                              outage_peak_rss=200 * 1024, outage_mib=200)
        self.assertTrue(any("reconnect loop" in x for x in v), v)
        self.assertTrue(any("bounds: RSS" in x for x in v), v)


if __name__ == "__main__":
    unittest.main()
