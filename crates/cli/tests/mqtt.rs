//! End to end: `mqlink pub`/`sub`/`broker` against real Mosquitto brokers, the embedded
//! broker and the reference clients (`mosquitto_pub`, `mosquitto_sub`).

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Stdio;

use common::*;
use mqlink_testkit::{Mosquitto, MosquittoOptions, MosquittoSub, TlsMaterial};

fn lines(prefix: &str, n: usize) -> (Vec<u8>, Vec<String>) {
    let msgs: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    let mut stdin = msgs.join("\n").into_bytes();
    stdin.push(b'\n');
    (stdin, msgs)
}

/// mqlink pub → mosquitto_sub, for every QoS and protocol, against a broker given by args.
fn pub_roundtrips(url: &str, client_args: &[String]) {
    for qos in ["0", "1", "2"] {
        for version in ["5", "311"] {
            let topic = format!("rt/{qos}/{version}");
            let mut sub_args = vec![
                "-t".to_string(),
                format!("{topic}/#"),
                "-q".into(),
                qos.into(),
                "-v".into(),
            ];
            sub_args.extend(["-V".into(), "mqttv5".into()]);
            let sub = MosquittoSub::start_ready(client_args, &sub_args, &format!("{topic}/probe"));
            let (stdin, msgs) = lines("m", 5);
            let out = mqlink_pub(
                &[
                    "--url",
                    url,
                    "-t",
                    &format!("{topic}/x"),
                    "-q",
                    qos,
                    "-V",
                    version,
                    "-l",
                ],
                &stdin,
            );
            assert_ok(&out, "mqlink pub");
            let got = sub.wait_for_lines(5, T);
            let want: Vec<String> = msgs.iter().map(|m| format!("{topic}/x {m}")).collect();
            assert_eq!(got, want, "qos {qos} v{version}");
        }
    }
}

/// mosquitto_pub → mqlink sub, for every QoS and protocol.
fn sub_roundtrips(url: &str, client_args: &[String]) {
    for qos in ["0", "1", "2"] {
        for version in ["5", "311"] {
            let topic = format!("rs/{qos}/{version}");
            let filter = format!("{topic}/#");
            let probe_args = client_args.to_vec();
            let probe_topic = format!("{topic}/probe");
            let mut sub = MqlinkSub::start_ready(
                &["--url", url, "-t", &filter, "-q", qos, "-V", version, "-v"],
                || mpub(&probe_args, &["-t", &probe_topic, "-m", "probe"]),
            );
            let mut want = Vec::new();
            for i in 0..5 {
                let m = format!("hello {i}");
                mpub(
                    client_args,
                    &["-t", &format!("{topic}/y"), "-m", &m, "-q", qos],
                );
                want.push(format!("{topic}/y {m}"));
            }
            assert_eq!(sub.wait_for(5, T), want, "qos {qos} v{version}");
        }
    }
}

#[test]
fn mqlink_pub_reaches_mosquitto_sub_at_every_qos_and_protocol() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    pub_roundtrips(&broker.url(), &broker.client_args());
}

#[test]
fn mosquitto_pub_reaches_mqlink_sub_at_every_qos_and_protocol() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    sub_roundtrips(&broker.url(), &broker.client_args());
}

#[test]
fn embedded_broker_serves_v5_and_v311_at_every_qos() {
    let broker = EmbeddedBroker::start();
    pub_roundtrips(&broker.url(), &broker.client_args());
    sub_roundtrips(&broker.url(), &broker.client_args());
}

#[test]
fn mqlink_sub_verbose_output_matches_mosquitto_sub() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let args = broker.client_args();
    let theirs = MosquittoSub::start_ready(&args, &["-t", "cmp/#", "-v", "-q", "1"], "cmp/probe");
    // Our probes go to a topic mosquitto_sub does not see.
    let mut ours = MqlinkSub::start_ready(
        &[
            "--url",
            &broker.url(),
            "-t",
            "cmp/#",
            "-t",
            "ours/probe",
            "-v",
            "-q",
            "1",
        ],
        || mpub(&args, &["-t", "ours/probe", "-m", "probe"]),
    );
    let payloads = ["plain", "with spaces", "{\"json\": [1, 2]}", "ünïcödé"];
    for (i, p) in payloads.iter().enumerate() {
        mpub(&args, &["-t", &format!("cmp/a/{i}"), "-m", p, "-q", "1"]);
    }
    assert_eq!(ours.wait_for(4, T), theirs.wait_for_lines(4, T));
}

#[test]
fn retained_messages_work_both_ways() {
    for broker_url_args in [None, Some(())] {
        let (mosq, emb);
        let (url, args) = if broker_url_args.is_none() {
            mosq = Mosquitto::start(MosquittoOptions::default());
            (mosq.url(), mosq.client_args())
        } else {
            emb = EmbeddedBroker::start();
            (emb.url(), emb.client_args())
        };
        let out = mqlink_pub(
            &["--url", &url, "-t", "ret/a", "-m", "kept", "-r", "-q", "1"],
            b"",
        );
        assert_ok(&out, "mqlink pub -r");
        let mut sub_args = args.clone();
        sub_args.extend(["-t", "ret/a", "-C", "1", "-W", "10"].map(String::from));
        let mut sub = MosquittoSub::start(&sub_args);
        assert!(sub.wait_for_exit(T).success());
        assert_eq!(sub.lines(), ["kept"]);

        mpub(&args, &["-t", "ret/b", "-m", "also kept", "-r", "-q", "1"]);
        let out = mqlink()
            .args(["sub", "--url", &url, "-t", "ret/b", "-C", "1", "-W", "10"])
            .output()
            .unwrap();
        assert_ok(&out, "mqlink sub");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "also kept\n");
    }
}

#[test]
fn will_is_published_when_mqlink_is_killed() {
    let broker = Mosquitto::start(MosquittoOptions::default());
    let args = broker.client_args();
    let watcher = MosquittoSub::start_ready(&args, &["-t", "wills/#", "-v"], "wills/probe");
    let mut victim = mqlink()
        .args([
            "sub",
            "--url",
            &broker.url(),
            "-t",
            "nothing",
            "--will-topic",
            "wills/victim",
            "--will-payload",
            "gone",
            "-V",
            "5",
            "-i",
            "will-victim",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the victim is connected: the broker logs the new client.
    assert!(mqlink_testkit::wait_until(
        std::time::Instant::now() + T,
        || broker.log().contains("as will-victim")
    ));
    victim.kill().unwrap();
    victim.wait().unwrap();
    assert_eq!(watcher.wait_for_lines(1, T), ["wills/victim gone"]);
}

#[test]
fn websocket_to_mosquitto_and_to_the_embedded_broker() {
    let broker = Mosquitto::start(MosquittoOptions {
        websockets: true,
        ..MosquittoOptions::default()
    });
    let sub = MosquittoSub::start_ready(
        &broker.client_args(),
        &["-t", "ws/#", "-v", "-q", "1"],
        "ws/probe",
    );
    let out = mqlink_pub(
        &[
            "--url",
            &broker.ws_url(),
            "-t",
            "ws/a",
            "-m",
            "over websocket",
            "-q",
            "1",
        ],
        b"",
    );
    assert_ok(&out, "mqlink pub over ws to mosquitto");
    assert_eq!(sub.wait_for_lines(1, T), ["ws/a over websocket"]);

    let emb = EmbeddedBroker::start();
    let args = emb.client_args();
    let sub = MosquittoSub::start_ready(&args, &["-t", "ws/#", "-v", "-q", "1"], "ws/probe");
    let out = mqlink_pub(
        &[
            "--url",
            &emb.ws_url(),
            "-t",
            "ws/b",
            "-m",
            "embedded ws",
            "-q",
            "2",
        ],
        b"",
    );
    assert_ok(&out, "mqlink pub over ws to embedded");
    assert_eq!(sub.wait_for_lines(1, T), ["ws/b embedded ws"]);
}

fn tls_broker(require_client_cert: bool) -> Mosquitto {
    Mosquitto::start(MosquittoOptions {
        tls: Some(TlsMaterial::generate()),
        require_client_cert,
        ..MosquittoOptions::default()
    })
}

#[test]
fn tls_server_auth_with_custom_ca() {
    let broker = tls_broker(false);
    let tls = broker.tls().unwrap();
    let sub = MosquittoSub::start_ready(&broker.client_args(), &["-t", "tls/#", "-v"], "tls/probe");
    let ca = tls.ca_file().to_str().unwrap().to_string();
    let out = mqlink_pub(
        &[
            "--url",
            &broker.tls_url(),
            "--cafile",
            &ca,
            "-t",
            "tls/a",
            "-m",
            "secret",
            "-q",
            "1",
        ],
        b"",
    );
    assert_ok(&out, "mqlink pub over TLS");
    assert_eq!(sub.wait_for_lines(1, T), ["tls/a secret"]);
}

#[test]
fn tls_wrong_ca_fails_fast_and_names_the_certificate_problem() {
    let broker = tls_broker(false);
    let other = broker
        .tls()
        .unwrap()
        .other_ca_file()
        .to_str()
        .unwrap()
        .to_string();
    let out = mqlink_pub(
        &[
            "--url",
            &broker.tls_url(),
            "--cafile",
            &other,
            "-t",
            "tls/a",
            "-m",
            "x",
        ],
        b"",
    );
    // 8: mosquitto_pub's exit code for a failed TLS handshake (MOSQ_ERR_TLS).
    assert_eq!(out.status.code(), Some(8));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("UnknownIssuer") && err.contains("--cafile"),
        "{err}"
    );
}

#[test]
fn mutual_tls_needs_the_client_certificate() {
    let broker = tls_broker(true);
    let tls = broker.tls().unwrap();
    let p = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let (ca, cert, key) = (p(tls.ca_file()), p(tls.client_cert()), p(tls.client_key()));
    let out = mqlink_pub(
        &[
            "--url",
            &broker.tls_url(),
            "--cafile",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
            "-t",
            "m/a",
            "-m",
            "x",
            "-q",
            "1",
        ],
        b"",
    );
    assert_ok(&out, "mqlink pub with client certificate");
    let out = mqlink_pub(
        &[
            "--url",
            &broker.tls_url(),
            "--cafile",
            &ca,
            "-t",
            "m/a",
            "-m",
            "x",
            "-q",
            "1",
        ],
        b"",
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "without a client certificate the connection must fail"
    );
    let out = mqlink_pub(
        &[
            "--url",
            &broker.tls_url(),
            "--cafile",
            &ca,
            "--cert",
            &cert,
            "-t",
            "m/a",
            "-m",
            "x",
        ],
        b"",
    );
    // mosquitto_pub exits 1 on argument errors too; `mqlink pub` follows it.
    assert_eq!(
        out.status.code(),
        Some(1),
        "certificate without key is an argument error"
    );
}

#[test]
fn embedded_broker_says_clearly_when_its_port_is_taken() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = mqlink()
        .args(["broker", "--listen", &addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already in use") && err.contains(&addr),
        "{err}"
    );
}

#[test]
fn pub_speaks_311_by_default_like_mosquitto_pub() {
    // A minimal broker that refuses protocol level 5 the way a 3.1.1-only broker does
    // (CONNACK return code 1), accepts 3.1.1 and records what it receives. mosquitto_pub
    // (and so `mqlink pub`) sends 3.1.1 unless -V says otherwise: no refused attempt.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fake = std::thread::spawn(move || {
        let mut levels = Vec::new();
        for _ in 0..2 {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 256];
            let n = s.read(&mut buf).unwrap();
            // CONNECT: fixed header (2 bytes for short packets), protocol name, level.
            let name_len = usize::from(buf[3]);
            let level = buf[4 + name_len];
            levels.push(level);
            if level == 5 {
                s.write_all(&[0x20, 0x02, 0x00, 0x01]).unwrap();
                continue;
            }
            s.write_all(&[0x20, 0x02, 0x00, 0x00]).unwrap();
            let mut rest = buf[..n].to_vec();
            rest.clear();
            let mut chunk = [0u8; 256];
            // Read until DISCONNECT (0xe0) arrives.
            while !rest.contains(&0xe0) {
                let k = s.read(&mut chunk).unwrap();
                if k == 0 {
                    break;
                }
                rest.extend_from_slice(&chunk[..k]);
            }
            return (levels, rest);
        }
        unreachable!()
    });
    let out = mqlink_pub(
        &[
            "--url",
            &format!("mqtt://127.0.0.1:{port}"),
            "-t",
            "fb",
            "-m",
            "hi",
        ],
        b"",
    );
    assert_ok(&out, "mqlink pub without -V");
    let (levels, rest) = fake.join().unwrap();
    assert_eq!(levels, vec![4]);
    assert_eq!(
        &rest[..2],
        &[0x30, 6],
        "a QoS 0 PUBLISH of topic 'fb' and payload 'hi'"
    );
    assert_eq!(&rest[2..8], &[0, 2, b'f', b'b', b'h', b'i']);
}

/// Regression: a resumed persistent session gets its queued messages right after CONNACK,
/// before the SUBACK (Mosquitto sends up to `max_inflight_messages` of them before it
/// answers the SUBSCRIBE; MQTT 3.1.1 has no Receive Maximum to stop it). With more of them
/// than `mqlink sub`'s delivery buffer (1024), the engine stopped reading with the SUBACK
/// unread behind them, while `mqlink sub` waited for that SUBACK before printing: it hung
/// for good. It must print every message and exit at `-C`.
#[test]
fn a_resumed_session_sent_before_the_suback_is_printed_in_full() {
    let broker = Mosquitto::start(MosquittoOptions {
        max_inflight_messages: Some(10_000),
        ..MosquittoOptions::default()
    });
    let url = broker.url();
    let sub = |extra: &[&str]| {
        let mut c = mqlink();
        c.arg("sub")
            .args(["--url", &url, "-c", "-i", "resumed-backlog", "-q", "1"])
            .args(["-t", "b/#"])
            .args(extra);
        c
    };
    // The persistent session and its subscription; then a backlog while it is away.
    let out = sub(&["-E"]).output().unwrap();
    assert_ok(&out, "mqlink sub -E");
    let (stdin, msgs) = lines("m", 5_000);
    let out = mqlink_pub(&["--url", &url, "-t", "b/1", "-q", "1", "-l"], &stdin);
    assert_ok(&out, "mqlink pub -l");
    let dir = tempfile::tempdir().unwrap();
    let printed = dir.path().join("out");
    let mut child = sub(&["-C", "5000"])
        .stdout(std::fs::File::create(&printed).unwrap())
        .stderr(std::fs::File::create(dir.path().join("err")).unwrap())
        .spawn()
        .unwrap();
    let done = mqlink_testkit::wait_until(std::time::Instant::now() + T, || {
        child.try_wait().unwrap().is_some()
    });
    if !done {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    let stderr = std::fs::read_to_string(dir.path().join("err")).unwrap();
    let got: Vec<String> = std::fs::read_to_string(&printed)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert!(
        done,
        "mqlink sub -C 5000 still running after {T:?} with {} lines printed",
        got.len()
    );
    assert!(status.success(), "{status:?}: {stderr}");
    assert_eq!(got, msgs);
}
