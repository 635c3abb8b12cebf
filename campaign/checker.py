"""The checker: from what the clients were answered and what the subscriber saw, decide
safety, liveness, honesty and bounds for one episode.

Inputs are independent of mqlink's own account where possible: the HTTP answers (202 =
accepted), the subscriber's arrivals (straight from the broker), the dead-letter file, the
broker's connection log, /readyz and /proc/PID/status samples. mqlink's /metrics are
checked *against* those, not trusted.

Losses that are not mqlink's fault are reported in their own columns, never hidden and
never failed on: ``broker_lost`` (accepted before a SIGKILL of the broker, which may have
acknowledged and then lost them), ``broker_dropped`` (a denied publish the broker
acknowledged without a reason code: MQTT 3.1.1 or QoS 0) and ``qos0_lost`` (QoS 0 is
at most once by contract: it leaves the spool once written to the socket).
"""

import bisect
import json

from faults import TRANSIENT_CODES

RSS_BOUND_KIB = 96 * 1024
MAX_CONNS_AFTER_HEAL = 3
CONNS_PER_DEAD_LETTER = 4


def check(ep, answers, arrivals, dead, final_metrics, samples, ctx):
    """Returns (row, violations). ``ctx`` carries the episode's timeline: heals, broker
    kills, limits on stalls and readiness, the final incarnation's baselines."""
    v = []
    cell = ep["cell"]
    env = ep["env"]
    accepted_all = {i: e for i, e in answers.items() if e["status"] == 202}
    filtered = {i: e for i, e in answers.items() if e["kind"] == "xfilt"}
    accepted = {i: e for i, e in accepted_all.items() if e["kind"] != "xfilt"}

    first = {}
    count = {}
    for t, topic, eid, retain in arrivals:
        if eid is None:
            continue
        if retain:
            # Retained copies replayed on (re)subscription are not new deliveries.
            first.setdefault(eid, t)
            continue
        count[eid] = count.get(eid, 0) + 1
        first.setdefault(eid, t)
    duplicates = sum(c - 1 for c in count.values() if c > 1)

    dl_ids = {}
    transient = {}
    no_reason = 0
    for d in dead:
        eid = dead_letter_id(d)
        if eid is not None:
            dl_ids[eid] = d
        if not (d.get("reason") or d.get("error")):
            no_reason += 1
        code = d.get("code")
        if code in TRANSIENT_CODES:
            transient.setdefault(code, []).append(eid)
    if no_reason:
        v.append(f"honesty: {no_reason} dead-letter entries without a reason")
    for code, ids in sorted(transient.items()):
        v.append(f"safety: {len(ids)} messages dead-lettered on transient refusal 0x{code:02x} "
                 f"({TRANSIENT_CODES[code]}) instead of retried (e.g. {ids[:3]})")

    delivered = {i for i in accepted if i in first}
    dead_lettered = {i for i in accepted if i in dl_ids and i not in first}
    missing = [i for i in accepted if i not in first and i not in dl_ids]

    # Dead-letters of events no limit applies to.
    for i in dl_ids:
        e = answers.get(i)
        if e is None:
            continue
        if e["kind"] == "normal" and not (env == "limits_maxqos" and cell["qos"] == 2):
            v.append(f"safety: event {i} dead-lettered though the broker has no limit for it "
                     f"({dl_ids[i].get('reason')})")
            break

    kills = ctx["broker_kills"]
    spool_records = final_metrics.get("mqlink_spool_records")
    lost, stuck, broker_lost, broker_dropped, qos0_lost = [], [], [], [], []
    for i in missing:
        e = accepted[i]
        qos = 2 if e["kind"] == "xq2" else cell["qos"]
        if e["kind"] == "xdeny" and (cell["protocol"] == "3.1.1" or qos == 0):
            broker_dropped.append(i)
        elif any(e["t"] <= k for k in kills):
            broker_lost.append(i)
        elif qos == 0:
            qos0_lost.append(i)
        elif spool_records:
            stuck.append(i)
        else:
            lost.append(i)
    # QoS 0 losses are allowed, QoS 0 records left in the spool are not; which ids those
    # records hold is not known from outside, so they count as stuck by number.
    stuck_n = max(len(stuck), int(spool_records or 0)) if not ctx["refused_start"] else 0
    if lost:
        v.append(f"safety: {len(lost)} accepted events neither delivered nor dead-lettered, "
                 f"spool empty (e.g. {sorted(lost, key=_key)[:5]})")
    if stuck_n:
        v.append(f"liveness: {int(spool_records or 0)} records still in the spool after the "
                 f"quiescence deadline; {len(stuck)} accepted QoS 1/2 events undelivered "
                 f"(e.g. {sorted(stuck, key=_key)[:5]})")

    # Order of first arrivals per client (one route, one topic per client).
    order_violations = 0
    order_examples = []
    per_client = {}
    for i, t in sorted(first.items(), key=lambda x: x[1]):
        e = answers.get(i)
        if e is None or e["kind"] != "normal":
            continue
        last = per_client.get(e["client"], 0)
        if e["n"] < last:
            order_violations += 1
            if len(order_examples) < 5:
                order_examples.append(f"{i} after {e['client']}-{last}")
        per_client[e["client"]] = max(last, e["n"])
    if order_violations:
        v.append(f"safety: {order_violations} first arrivals out of order within a client's route "
                 f"(e.g. {', '.join(order_examples)})")

    # Filtered events: a deliberate drop is an answer (2xx), not "retry later".
    f503 = [i for i, e in filtered.items() if e["status"] == 503]
    if f503:
        v.append(f"honesty: {len(f503)} events a route's transform filters out were answered "
                 f"503 (retry later) instead of 2xx")
    fdeliv = [i for i in filtered if i in first]
    if fdeliv:
        v.append(f"safety: {len(fdeliv)} filtered events were published")

    # Liveness: stall after each heal, while something accepted waited.
    arrival_times = sorted(first.values())
    # Events mqlink still owes the subscriber: delivered ones (until they arrived) and the
    # ones it left stuck in the spool (forever). Not the lost ones: mqlink no longer knows
    # of them, so being ready then is not a lie (the loss is already a safety violation).
    owed = list(delivered) + stuck
    pending_answered = sorted(accepted[i]["t"] for i in owed)
    max_stall = 0.0
    for h in ctx["heals"]:
        waiting = any(accepted[i]["t"] <= h < first[i] for i in delivered)
        if not waiting:
            continue
        k = bisect.bisect_right(arrival_times, h)
        if k < len(arrival_times):
            max_stall = max(max_stall, arrival_times[k] - h)
        else:
            max_stall = max(max_stall, ctx["end"] - h)
    if max_stall > ctx["stall_bound"]:
        v.append(f"liveness: delivery resumed {max_stall:.1f}s after a heal "
                 f"(bound {ctx['stall_bound']:.0f}s)")

    # Liveness of ingest: once the world is healed, events are accepted again (a full disk
    # frees up as the spool drains). Answers in the last 2 s of load must include a 202.
    if ctx["heals"] and not ctx["refused_start"] and ctx.get("load_end"):
        tail_from = max(ctx["heals"][-1], ctx["load_end"] - 2.0)
        tail = [e for e in answers.values() if e["t"] > tail_from]
        if tail and not any(e["status"] == 202 for e in tail):
            statuses = sorted({str(e["status"]) for e in tail})
            v.append(f"liveness: no event accepted in the last {ctx['load_end'] - tail_from:.0f}s "
                     f"of load after the final heal ({len(tail)} answered {', '.join(statuses)})")

    # Liveness: after the final heal one connection should do (two when a black-holed one
    # had to time out first). More is a reconnect loop, e.g. on a message the broker
    # cannot take.
    # A broker that closes on a message it cannot take (MQTT 3.1.1 has no other way to
    # refuse) may cost a few connections per message before it is dead-lettered.
    allowed = MAX_CONNS_AFTER_HEAL + CONNS_PER_DEAD_LETTER * len(dead)
    if ctx["conns_after_heal"] > allowed and not ctx["refused_start"]:
        v.append(f"liveness: {ctx['conns_after_heal']} connections after the final heal "
                 f"(reconnect loop; at most {allowed} expected with {len(dead)} dead-letters)")

    # Honesty: ready while nothing moves although delivered-later events wait.
    lie = 0.0
    run_start = None
    firsts_sorted = sorted(first.get(i, float("inf")) for i in owed)
    for t, ready, _rss, _arr, alive in samples:
        n_answered = bisect.bisect_right(pending_answered, t)
        n_arrived = bisect.bisect_right(firsts_sorted, t)
        waiting = n_answered - n_arrived > 0
        # Progress: some first arrival in the last sample period.
        if ready and alive and waiting and _no_arrival_near(firsts_sorted, t, 1.0):
            run_start = t if run_start is None else run_start
            lie = max(lie, t - run_start)
        else:
            run_start = None
    if lie > ctx["ready_bound"]:
        v.append(f"honesty: /readyz said ready for {lie:.1f}s while accepted events waited and "
                 f"none arrived (bound {ctx['ready_bound']:.0f}s)")

    # Honesty: counters of the final incarnation against what really happened.
    m = final_metrics
    if m:
        dl_counter = m.get("mqlink_dead_lettered")
        if dl_counter is not None and dl_counter != len(dead) - ctx["dead_at_start"]:
            v.append(f"honesty: mqlink_dead_lettered={dl_counter:.0f} but the dead-letter file "
                     f"got {len(dead) - ctx['dead_at_start']} lines in this incarnation")
        acc_counter = m.get("mqlink_events_accepted")
        if acc_counter is not None and env != "filtered":
            n202 = sum(1 for e in accepted_all.values() if e["t"] >= ctx["last_start"])
            if acc_counter != n202:
                v.append(f"honesty: mqlink_events_accepted={acc_counter:.0f} but clients got "
                         f"202 for {n202} events in this incarnation")

    # Protocol: a v5 link must stay v5 (Mosquitto never refuses v5).
    protos = ctx["protocols"]
    if cell["protocol"] == "5" and any(p != "p5" for p in protos):
        n = sum(1 for p in protos if p != "p5")
        v.append(f"honesty: {n} of {len(protos)} connections fell back to MQTT 3.1.1 "
                 f"although the broker speaks 5")

    peak = max((s[2] or 0 for s in samples), default=0)
    if env == "outage_rss" and ctx["outage_peak_rss"] > RSS_BOUND_KIB:
        v.append(f"bounds: RSS {ctx['outage_peak_rss'] / 1024:.0f} MiB during the outage "
                 f"(bound {RSS_BOUND_KIB // 1024} MiB, {ctx['outage_mib']:.0f} MiB waiting)")

    for rc in ctx["unexpected_exits"]:
        v.append(f"honesty: mqlink exited on its own with status {rc}")
    v.extend(ctx["extra_violations"])

    row = {
        "faults": ep["faults"],
        "qos": cell["qos"],
        "session": cell["session"],
        "protocol": cell["protocol"],
        "accepted": len(accepted),
        "delivered": len(delivered),
        "dead_lettered": len(dead_lettered),
        "duplicates": duplicates,
        "lost": len(lost),
        "stuck": stuck_n,
        "broker_lost": len(broker_lost) + len(broker_dropped),
        "qos0_lost": len(qos0_lost),
        "max_stall": max_stall,
        "ready_lie": lie,
        "peak_rss_mib": peak / 1024,
        "violations": len(v),
    }
    return row, v


def dead_letter_id(d):
    """The event id in a dead-letter entry's payload (JSON, or a JSON text)."""
    payload = d.get("payload")
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except ValueError:
            return None
    return payload.get("id") if isinstance(payload, dict) else None


def _no_arrival_near(sorted_times, t, window):
    k = bisect.bisect_right(sorted_times, t)
    return k == 0 or t - sorted_times[k - 1] > window


def _key(i):
    a, b = i.split("-")
    return (int(a), int(b))
