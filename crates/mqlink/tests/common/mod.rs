//! Pieces shared by the integration tests that play a broker on a raw socket.

use mqlink::mqtt::codec;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The next whole MQTT packet from `s` (fixed header included), buffering partial reads in
/// `buf`; `None` once the peer closed or the read failed. Packets up to 16 MiB.
pub async fn read_packet(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if let Ok(Some(n)) = codec::frame_len(buf, 1 << 24) {
            return Some(buf.drain(..n).collect());
        }
        let mut chunk = [0u8; 8192];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
