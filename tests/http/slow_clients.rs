//! Slow and idle clients over real TCP (issue "trust under stress"): the host closes a
//! connection whose request head does not arrive within the header timeout (a slow loris
//! sending a byte at a time, a connection that sends nothing, an idle keep-alive connection),
//! cuts a request body that stops sending, and serves at most `--max-connections` connections
//! at once (the next wait until one closes), while a normal request is still answered at once.
//! The timeouts are set to a second so each test takes a few seconds; loopback only.
//!
//! Needs the component (`sh scripts/build-component`). Run:
//! `cargo test --release -p chalkstream-host --test slow_clients`.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// `--header-timeout` and `--body-timeout` of these tests, seconds.
const TIMEOUT_S: &str = "1";
const TIMEOUT: Duration = Duration::from_secs(1);
/// What the server may take beyond a timeout to close a connection (a loaded 2-core machine).
const SLACK: Duration = Duration::from_millis(1500);

fn connect(host: &Host) -> TcpStream {
    let stream = TcpStream::connect(host.base().trim_start_matches("http://")).expect("connect");
    stream.set_nodelay(true).unwrap();
    stream
}

/// Whether the server has closed `stream`: EOF or a reset, after reading whatever it sent
/// first (an error answer, say). Never blocks.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break true,
        }
    };
    stream.set_nonblocking(false).unwrap();
    closed
}

/// A normal request on a connection of its own, and how long its answer took.
fn timed_get(host: &Host, path: &str) -> (Resp, Duration) {
    let started = Instant::now();
    let resp = try_request(&new_agent(), &host.base(), "GET", path, &[], None).expect("a normal request");
    (resp, started.elapsed())
}

#[test]
fn slow_loris_heads_and_idle_connections_are_closed_while_a_normal_request_is_answered() {
    let host = Host::with_args(&[], &["--header-timeout", TIMEOUT_S, "--body-timeout", TIMEOUT_S]);
    const LORISES: usize = 200;
    const IDLE: usize = 50;

    // Lorises: a request head that never ends, one byte per connection every 50 ms.
    let head: Vec<u8> = {
        let mut head = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', 4000));
        head
    };
    let started = Instant::now();
    let lorises: Vec<TcpStream> = (0..LORISES).map(|_| connect(&host)).collect();
    let idle: Vec<TcpStream> = (0..IDLE).map(|_| connect(&host)).collect();
    // A keep-alive connection that made one request and then stays idle.
    let mut kept = connect(&host);
    kept.write_all(b"GET /.well-known/spin/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = [0u8; 512];
    let n = kept.read(&mut answer).unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer[..n]));

    let stop = Arc::new(AtomicBool::new(false));
    let dribbler = {
        let stop = stop.clone();
        let mut lorises: Vec<TcpStream> = lorises.iter().map(|s| s.try_clone().unwrap()).collect();
        thread::spawn(move || {
            let mut at = 0;
            while !stop.load(Ordering::Relaxed) && at < head.len() {
                for loris in &mut lorises {
                    // Writes to a connection the server closed fail: that is the point.
                    let _ = loris.write_all(&head[at..at + 1]);
                }
                at += 1;
                thread::sleep(Duration::from_millis(50));
            }
        })
    };

    // Normal requests keep being answered promptly meanwhile.
    thread::sleep(Duration::from_millis(300));
    for path in ["/.well-known/spin/health", "/"] {
        let (resp, took) = timed_get(&host, path);
        assert_eq!(resp.status, 200, "{resp}");
        assert!(took < Duration::from_secs(2), "GET {path} took {took:?} among {LORISES} slow lorises");
    }

    // By the header timeout (and some slack) the server has closed every one of them.
    let deadline = started + TIMEOUT + SLACK;
    thread::sleep(deadline.saturating_duration_since(Instant::now()));
    let mut open = Vec::new();
    for (what, streams) in [("slow loris", lorises), ("idle", idle)] {
        let count = streams.into_iter().filter_map(|mut s| (!closed_by_server(&mut s)).then_some(())).count();
        if count > 0 {
            open.push(format!("{count} {what} connections"));
        }
    }
    if !closed_by_server(&mut kept) {
        open.push("the idle keep-alive connection".to_owned());
    }
    stop.store(true, Ordering::Relaxed);
    dribbler.join().unwrap();
    assert!(open.is_empty(), "still open {:?} after the connections started: {}", started.elapsed(), open.join(", "));

    // And the host still answers.
    let (resp, took) = timed_get(&host, "/");
    assert_eq!(resp.status, 200, "{resp}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn an_upload_whose_body_stalls_is_cut_and_nothing_is_stored() {
    let host = Host::with_args(&[], &["--body-timeout", TIMEOUT_S]);
    let session = new_session();
    let body = ts_packets(100, 7);
    let mut stream = connect(&host);
    let head = format!(
        "PUT /ingest/{session}/0.ts HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Duration: 2\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body[..body.len() / 10]).unwrap();
    let started = Instant::now();

    // The rest never comes: within the body timeout (and slack) the upload is answered as
    // unreadable (never acknowledged) and the connection closed.
    stream.set_read_timeout(Some(TIMEOUT + SLACK + Duration::from_secs(2))).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let ended = loop {
        match stream.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break Err(e),
            Err(_) => break Ok(()), // reset: closed too
        }
    };
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(ended.is_ok(), "the stalled upload's connection is still open after {took:?}; it answered {answer:?}");
    assert!(took < TIMEOUT + SLACK, "closed only after {took:?}");
    assert!(took >= TIMEOUT.mul_f64(0.8), "closed after {took:?}, before the body timeout");
    assert!(!answer.starts_with("HTTP/1.1 20"), "a stalled upload was acknowledged: {answer}");
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 4"), "{answer}");

    // Nothing was stored, and the same upload sent whole is.
    let id = stream_id(&session);
    assert_eq!(host.get(&format!("/playlist/{id}.m3u8")).status, 404);
    host.upload(&session, 0, "2", None, &body).assert_status(201);
    assert!(!host.log().contains(&session), "the host logged the session");
}

#[test]
fn connections_past_the_cap_wait_until_one_closes() {
    const CAP: usize = 4;
    let host = Host::with_args(&[], &["--max-connections", &CAP.to_string(), "--header-timeout", TIMEOUT_S]);
    // The cap's worth of connections that send nothing.
    let started = Instant::now();
    let idle: Vec<TcpStream> = (0..CAP).map(|_| connect(&host)).collect();
    thread::sleep(Duration::from_millis(200));

    // The next connection waits to be served until the header timeout closes the idle ones.
    let (resp, _) = timed_get(&host, "/.well-known/spin/health");
    let took = started.elapsed();
    assert_eq!(resp.status, 200, "{resp}");
    assert!(took >= TIMEOUT.mul_f64(0.8), "answered after {took:?}, past a cap of {CAP} idle connections");
    assert!(took < TIMEOUT + SLACK + Duration::from_secs(1), "answered only after {took:?}");
    drop(idle);

    // With the slots free, requests are answered at once again.
    let (resp, took) = timed_get(&host, "/.well-known/spin/health");
    assert_eq!(resp.status, 200, "{resp}");
    assert!(took < Duration::from_millis(500), "{took:?}");
}
