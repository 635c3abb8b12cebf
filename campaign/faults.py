"""The fault catalog and the seeded schedule generator.

Two kinds of fault:

- **environment** faults shape the world an episode starts in: broker limits written into
  mosquitto.conf (max_packet_size, retain_available false, max_qos 1, a small receive
  maximum, an ACL denial), a route whose transform filters events out, a spool on a small
  tmpfs that fills up, and the memory-bound outage with 64 KiB events. They come with
  "special" events the clients mix into the load (too large, retained, QoS 2, denied,
  filtered) so the limit is actually hit.
- **schedule** faults are timed actions during the load: proxy cuts (at a random byte,
  including before CONNACK), blackhole, delay, reset, half-open; broker SIGSTOP/SIGCONT,
  SIGKILL, graceful restart; SIGKILL of mqlink; flipped bytes in a spool segment.

A schedule is a plain list of ``(seconds after load start, action, args)``; it is printed
on failure and fully determined by the episode's seed, so ``--episode-seed`` replays it.
"""

ENV_FAULTS = {
    "limits_packet": {
        "broker": ["max_packet_size 4096"],
        "specials": [("xbig", 0.03, {}, 8000)],
    },
    "limits_retain": {
        "broker": ["retain_available false"],
        "specials": [("xret", 0.05, {}, 0)],
    },
    "limits_maxqos": {
        "broker": ["max_qos 1"],
        "specials": [("xq2", 0.05, {}, 0)],
    },
    "limits_inflight": {
        "broker": ["max_inflight_messages 2"],
        "specials": [],
    },
    "limits_acl": {
        "broker": [],
        "acl": "topic readwrite cp/#\ntopic read deny/#\n",
        "specials": [("xdeny", 0.05, {}, 0)],
    },
    "filtered": {
        "broker": [],
        "specials": [("xfilt", 0.1, {"skip": True}, 0)],
    },
    "disk_full": {"broker": [], "specials": [], "tmpfs": "4m", "pad": 1500, "after_heal": 12.0},
    "outage_rss": {"broker": [], "specials": [], "pad": 64 * 1024, "rate": 0},
}

SCHEDULE_FAULTS = [
    "none", "cut", "cut_connack", "blackhole", "delay", "reset", "halfopen",
    "broker_pause", "broker_kill", "broker_restart", "mqlink_kill", "hang_kill", "hang_reset",
    "hang_broker_kill", "disk_flip",
]

ALL_FAULTS = list(ENV_FAULTS) + SCHEDULE_FAULTS

# Transient MQTT 5 reason codes: retried with backoff, never dead-lettered.
TRANSIENT_CODES = {0x97: "quota exceeded", 0x89: "server busy", 0x93: "receive maximum exceeded",
                   0x96: "message rate too high"}


def primitive(rng, name, t):
    """Steps of one schedule fault starting at ``t``; returns (steps, end time)."""
    s = []
    if name == "none":
        t += 3
    elif name == "cut":
        for _ in range(rng.randint(1, 4)):
            d = rng.choice(["c2s", "s2c"])
            s.append((t, "cut", {"dir": d, "after": rng.randint(0, 3000), "rst": rng.random() < 0.5}))
            t += rng.uniform(0.5, 2.5)
    elif name == "cut_connack":
        # Arm a cut of the broker->mqlink stream within CONNACK's first bytes, then reset so
        # the next connection is the one cut. Repeated: mqlink must keep its protocol.
        for _ in range(rng.randint(1, 3)):
            s.append((t, "cut_connack", {"after": rng.randint(0, 3), "rst": rng.random() < 0.5}))
            t += rng.uniform(1.0, 3.0)
    elif name == "blackhole":
        s.append((t, "blackhole", {}))
        t += rng.uniform(2, 8)
        s.append((t, "heal", {}))
    elif name == "delay":
        s.append((t, "delay", {"seconds": rng.choice([0.05, 0.2, 0.5])}))
        t += rng.uniform(3, 6)
        s.append((t, "heal", {}))
    elif name == "reset":
        for _ in range(rng.randint(1, 3)):
            s.append((t, "reset", {}))
            t += rng.uniform(0.5, 2.0)
    elif name == "halfopen":
        s.append((t, "halfopen", {"dir": rng.choice(["c2s", "s2c"])}))
        t += rng.uniform(2, 8)
        s.append((t, "heal", {}))
    elif name == "broker_pause":
        s.append((t, "broker_pause", {}))
        t += rng.uniform(2, 6)
        s.append((t, "broker_resume", {}))
    elif name == "broker_kill":
        s.append((t, "broker_kill", {"down": round(rng.uniform(0, 3), 2)}))
        t += 4
    elif name == "broker_restart":
        s.append((t, "broker_restart", {"down": round(rng.uniform(0, 3), 2)}))
        t += 4
    elif name == "mqlink_kill":
        for _ in range(rng.randint(1, 3)):
            s.append((t, "mqlink_kill", {}))
            t += rng.uniform(1.5, 4)
    elif name == "hang_kill":
        # The broker hangs (SIGSTOP) while mqlink is killed and restarted, twice, then heals.
        s.append((t, "broker_pause", {}))
        for _ in range(2):
            t += rng.uniform(1, 2.5)
            s.append((t, "mqlink_kill", {}))
        t += rng.uniform(1, 2)
        s.append((t, "broker_resume", {}))
    elif name == "hang_reset":
        # The link hangs (the proxy stops reading mqlink, so its writes block mid-packet),
        # then the connection is reset; two or three cycles.
        for _ in range(rng.randint(2, 3)):
            s.append((t, "halfopen", {"dir": "c2s"}))
            t += rng.uniform(1, 3)
            s.append((t, "reset", {}))
            s.append((t, "heal", {}))
            t += rng.uniform(0.5, 2)
    elif name == "hang_broker_kill":
        # The broker hangs (SIGSTOP) with mqlink's writes in flight, then is SIGKILLed and
        # restarted; two cycles.
        for _ in range(2):
            s.append((t, "broker_pause", {}))
            t += rng.uniform(1, 3)
            s.append((t, "broker_kill", {"down": round(rng.uniform(0, 1), 2)}))
            t += 3
    elif name == "disk_flip":
        # A backlog builds behind a blackhole, mqlink dies, a byte of a stored record flips.
        s.append((t, "blackhole", {}))
        t += rng.uniform(2, 4)
        s.append((t, "flip_restart", {"pick": rng.random()}))
        t += 1
        s.append((t, "heal", {}))
    else:
        raise ValueError(f"unknown schedule fault {name}")
    return s, t + 1.0


def plan(rng, faults, matrix, short):
    """One episode: a matrix cell, an environment fault, a schedule. Deterministic in rng."""
    qos, session, proto = rng.choice(matrix)
    env = [f for f in faults if f in ENV_FAULTS]
    sched = [f for f in faults if f in SCHEDULE_FAULTS]
    pick_env = None
    picks = []
    if env and (not sched or rng.random() < 0.4):
        pick_env = rng.choice(env)
    if pick_env != "outage_rss" and sched:
        picks = [rng.choice(sched) for _ in range(1 if short else rng.randint(1, 3))]
    if pick_env == "limits_maxqos" and qos == 2 and proto == "3.1.1":
        # Every event of this cell is above the broker's max_qos, and a 3.1.1 broker can
        # only refuse by closing the connection: mqlink dead-letters them one by one, each
        # after 3-4 reconnects (docs/operations.md), so nothing drains within a deadline.
        # A documented degradation rather than a check; the draws above stay the same.
        pick_env = None
    t = 2.0
    steps = []
    if pick_env == "outage_rss":
        steps.append((t, "outage", {}))
        steps.append((t, "until_accepted_mib", {"mib": 200}))
        steps.append((t, "heal", {}))
        t += 1
    elif pick_env == "disk_full":
        # Fill the tmpfs behind an outage, then heal and let the spool drain.
        steps.append((t, "outage", {}))
        t += rng.uniform(4, 7)
        steps.append((t, "heal", {}))
        t += 1
    for p in picks:
        s, t = primitive(rng, p, t)
        steps.extend(s)
    steps.append((t, "heal", {}))
    name = "+".join(([pick_env] if pick_env else []) + [p for p in picks if p != "none"]) or "none"
    persistence = ("broker_restart" in picks) or (
        "broker_kill" in picks and rng.random() < 0.5)
    return {
        "cell": {"qos": qos, "session": session, "protocol": proto},
        "env": pick_env,
        "faults": name,
        "broker_persistence": persistence,
        "steps": [(round(a, 2), b, c) for a, b, c in steps],
        "load_seed": rng.randrange(2**32),
    }
