//! The private NATS server.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::time::Duration;

use mqlink_testkit::Nats;

#[test]
fn nats_starts_with_jetstream_on_a_private_port_and_stops() {
    let mut nats = Nats::start();
    assert_ne!(nats.port(), 4222, "must not use the system server's port");
    assert_eq!(nats.url(), format!("nats://127.0.0.1:{}", nats.port()));

    let stream = TcpStream::connect(("127.0.0.1", nats.port())).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut info = String::new();
    BufReader::new(stream).read_line(&mut info).unwrap();
    assert!(info.starts_with("INFO "), "{info}");
    assert!(info.contains("\"jetstream\":true"), "{info}");

    nats.stop().expect("was running");
    assert!(TcpStream::connect(("127.0.0.1", nats.port())).is_err());
    assert!(nats.log().contains("Server is ready"), "{}", nats.log());
}

#[test]
fn two_servers_get_distinct_ports() {
    let a = Nats::start();
    let b = Nats::start();
    assert_ne!(a.port(), b.port());
}
