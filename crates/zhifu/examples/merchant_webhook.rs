//! A merchant's side of zhifu's notifications: an HTTP endpoint that checks
//! each `Zhifu-Signature`, refuses stale or forged deliveries, and handles
//! every event once even though zhifu delivers at least once.
//!
//! Run it, then give its URL as the merchant's `webhook_url`:
//!
//! ```sh
//! ZHIFU_WEBHOOK_SECRET=whsec_… cargo run --example merchant_webhook -- 127.0.0.1:9000
//! ```
//!
//! Answer 2xx only once the event is safely handled: anything else makes
//! zhifu try again (after 4 m, 10 m, 10 m, 1 h, 2 h, 6 h, 15 h).

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Deliveries signed longer ago than this are refused (replayed captures).
const TOLERANCE_SECONDS: u64 = 5 * 60;
/// The largest notification body accepted.
const BODY_BYTES_MAX: usize = 1 << 20;

#[derive(Debug, PartialEq, Eq)]
enum Rejected {
    Malformed,
    Forged,
    Stale,
}

/// Checks `t=<unix seconds>,v1=<hex>` against HMAC-SHA256(secret, "t.body")
/// in constant time, and the time against `now` within the tolerance.
fn verify(secret: &str, header: &str, body: &[u8], now: u64) -> Result<(), Rejected> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<u64>().ok(),
            // Several v1 values may come while a secret is being rotated.
            Some(("v1", value)) => signatures.push(hex::decode(value).map_err(|_| Rejected::Malformed)?),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(Rejected::Malformed)?;
    let valid = signatures.iter().any(|signature| {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else { return false };
        mac.update(format!("{timestamp}.").as_bytes());
        mac.update(body);
        mac.verify_slice(signature).is_ok()
    });
    if !valid {
        return Err(Rejected::Forged);
    }
    if now.abs_diff(timestamp) > TOLERANCE_SECONDS {
        return Err(Rejected::Stale);
    }
    Ok(())
}

/// Remembers handled event ids (a real merchant keeps them in its database,
/// in the same transaction as the effect of the event).
#[derive(Default)]
struct Handled(HashSet<String>);

impl Handled {
    /// True the first time an id is seen.
    fn first_time(&mut self, event_id: &str) -> bool {
        self.0.insert(event_id.to_string())
    }
}

fn main() -> std::io::Result<()> {
    let address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9000".to_string());
    let secret = std::env::var("ZHIFU_WEBHOOK_SECRET").unwrap_or_default();
    // With `zhifu serve --clock simulated`, signatures carry simulated time.
    let check_time = std::env::var("ZHIFU_SIMULATED_CLOCK").is_err();
    let listener = TcpListener::bind(&address)?;
    println!("listening on http://{address}");
    let mut handled = Handled::default();
    for stream in listener.incoming() {
        let mut stream = stream?;
        let (header, body) = read_request(&mut stream)?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let checked = verify(&secret, &header, &body, if check_time { now } else { header_time(&header) });
        let status = match checked {
            Err(reason) => {
                println!("refused a delivery: {reason:?}");
                "400 Bad Request"
            }
            Ok(()) => {
                let event: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let id = event["id"].as_str().unwrap_or_default();
                if handled.first_time(id) {
                    println!("{id} {}: {}", event["type"], event["data"]);
                } else {
                    println!("{id} again (already handled)");
                }
                "200 OK"
            }
        };
        write!(stream, "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")?;
    }
    Ok(())
}

fn header_time(header: &str) -> u64 {
    header.split(',').find_map(|part| part.trim().strip_prefix("t=")?.parse().ok()).unwrap_or(0)
}

/// The `Zhifu-Signature` header and the body of one HTTP request.
fn read_request(stream: &mut std::net::TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let (mut signature, mut length) = (String::new(), 0usize);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "zhifu-signature" => signature = value.trim().to_string(),
                "content-length" => length = value.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length.min(BODY_BYTES_MAX)];
    reader.read_exact(&mut body)?;
    Ok((signature, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, t: u64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn a_good_signature_passes_and_forged_or_stale_ones_do_not() {
        let body = br#"{"id":"evt_1"}"#;
        let header = sign("whsec_a", 1_000, body);
        assert_eq!(verify("whsec_a", &header, body, 1_100), Ok(()));
        assert_eq!(verify("whsec_b", &header, body, 1_100), Err(Rejected::Forged));
        assert_eq!(verify("whsec_a", &header, br#"{"id":"evt_2"}"#, 1_100), Err(Rejected::Forged));
        assert_eq!(verify("whsec_a", &header, body, 1_000 + TOLERANCE_SECONDS + 1), Err(Rejected::Stale));
        assert_eq!(verify("whsec_a", "v1=zz", body, 1_000), Err(Rejected::Malformed));
        // During a rotation, either secret's signature is accepted.
        let rotated = format!("{},v1={}", header, "00".repeat(32));
        assert_eq!(verify("whsec_a", &rotated, body, 1_000), Ok(()));
    }

    #[test]
    fn an_event_is_handled_once() {
        let mut handled = Handled::default();
        assert!(handled.first_time("evt_1"));
        assert!(!handled.first_time("evt_1"));
        assert!(handled.first_time("evt_2"));
    }
}
