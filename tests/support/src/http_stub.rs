//! An HTTP/1.1 endpoint on a free loopback port for what tests stand in for (a metrics
//! endpoint, say): each request's head goes to a closure, whose answer is sent before the
//! connection closes. It serves until the test process ends.

use std::io::{BufRead, BufReader, Write as _};
use std::net::TcpListener;

/// What a request asked for.
#[derive(Debug)]
pub struct StubRequest {
    /// Path and query, e.g. `/v1/metrics?namespaces=a`.
    pub target: String,
    /// Header lines as sent, e.g. `Authorization: Bearer k`.
    pub headers: Vec<String>,
}

impl StubRequest {
    /// Every value of query parameter `name`, as sent (not decoded).
    pub fn query(&self, name: &str) -> Vec<String> {
        let prefix = format!("{name}=");
        self.target
            .split_once('?')
            .map(|(_, query)| {
                query
                    .split('&')
                    .filter_map(|pair| pair.strip_prefix(&prefix))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether header `name` came with exactly `value`.
    pub fn has_header(&self, name: &str, value: &str) -> bool {
        self.headers.iter().any(|line| {
            line.split_once(':').is_some_and(|(sent, sent_value)| {
                sent.eq_ignore_ascii_case(name) && sent_value.trim() == value
            })
        })
    }
}

/// An answer: status line text (`200 OK`), headers, body.
#[derive(Debug)]
pub struct StubAnswer {
    /// E.g. `429 Too Many Requests`.
    pub status: &'static str,
    /// Name and value of each header besides `Content-Length` and `Connection`.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: String,
}

/// Serves `respond`'s answer to every request; returns `127.0.0.1:<port>`.
pub fn serve_http(respond: impl Fn(&StubRequest) -> StubAnswer + Send + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    let address = listener.local_addr().expect("local address").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Ok(reading) = stream.try_clone() else {
                continue;
            };
            let mut lines = BufReader::new(reading)
                .lines()
                .map_while(Result::ok)
                .take_while(|line| !line.is_empty());
            // `GET /v1/metrics?namespaces=a HTTP/1.1`
            let target = lines
                .next()
                .and_then(|line| Some(line.split(' ').nth(1)?.to_owned()))
                .unwrap_or_default();
            let request = StubRequest {
                target,
                headers: lines.collect(),
            };
            let answer = respond(&request);
            let mut head = format!("HTTP/1.1 {}\r\n", answer.status);
            for (name, value) in &answer.headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            let _ = write!(
                stream,
                "{head}Content-Length: {}\r\nConnection: close\r\n\r\n{}",
                answer.body.len(),
                answer.body
            );
        }
    });
    address
}
