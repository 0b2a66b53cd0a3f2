//! The store's rules on an eventually consistent store, over real HTTP (issue 17, item 3, "Safe
//! on an eventually consistent store"): two `chalkstream-host` processes share one SQLite file in
//! the host's replicated mode (`CHALKSTREAM_KV_LAG_MS`, `host/src/lag.rs`): a request reads its
//! own writes at once and every other request's — on either host — only [`LAG_MS`] later, in the
//! order they were made. `spin-app/tests/lagging.rs` runs the same rules on a model store on a
//! fake clock; this runs the built component on real hosts, real time and real media.
//!
//! `uploads_gaps_ends_and_retention_on_two_lagging_hosts_keep_the_rules`: a v1 stream (whole
//! segments) and a v2 stream (parts, then a commit) upload at once, every request to the other
//! host than the one before (every seventh seq to both at once), each with a gap and then Stop
//! right after its last acknowledgement; retention is 6 s, so segments expire while readers
//! poll both hosts (one v2 reader with blocking reloads). What every reader asserts on every
//! playlist it gets:
//!
//! 1. every seq acknowledged (`200`/`201`, a gap's `201` too) at least a lag and [`SLACK_MS`]
//!    before the playlist was asked for is listed, unless it may have expired (a segment
//!    acknowledged later may be listed late: that is the lag);
//! 2. `EXT-X-MEDIA-SEQUENCE` and `EXT-X-DISCONTINUITY-SEQUENCE` never go back across the
//!    playlists it saw, from either host;
//! 3. the playlist passes `common::ll_check` (rfc8216bis tag by tag, `#EXT-X-GAP` and the
//!    `GAP=YES` parts a gap lists in the part window included), and a listed seq is one that was
//!    sent, marked `#EXT-X-GAP` exactly when it was given up;
//! 4. every listed segment (and every listed part) is served from the other host with the bytes
//!    uploaded for it (a gap answers `404`), unless it may have expired by then.
//!
//! A reader goes on after a broken rule; the test fails at the end with every rule broken, how
//! often, and the first instances. It also fails when no playlist ever missed a seq
//! acknowledged before it was asked for (the lag did not show). Whether Stop has ended the
//! playlists a lag after it is printed, not asserted.
//!
//! `another_requests_write_shows_only_after_the_lag`: the mode is really on — an upload through
//! host A is not seen by the next request on B (nor on A, nor in the SQLite file), and is after
//! the lag. It shares the two hosts with the test above when they run at once (each start
//! compiles the component). `the_key_limit_counts_writes_still_queued`: `--kv-limits` still
//! holds in the mode.
//!
//! Needs the component (`sh scripts/build-component`) and `ffmpeg`. Run:
//! `cargo test -p chalkstream-host --test lagging -- --nocapture` (prints what was checked);
//! `--release` starts the hosts much faster.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread;
use std::time::{Duration, Instant};

use common::ll_check;
use common::*;

/// The replicated mode's lag, on every host of these tests.
const LAG_MS: u64 = 300;
/// What a write may take beyond the lag to reach the SQLite file (the applier wakes when it is
/// due, then writes in order, on a busy machine).
const SLACK_MS: u64 = 300;
/// `stream_retention` of 0.1 minutes.
const RETENTION: &str = "0.1";
const RETENTION_MS: u64 = 6_000;
/// How long the two streams upload.
const UPLOAD_FOR: Duration = Duration::from_secs(12);
/// Between two v1 uploads: about five in a lag, so most uploads do not see the one before.
const V1_PACE: Duration = Duration::from_millis(60);
/// Between two v2 parts.
const PART_PACE: Duration = Duration::from_millis(40);
/// The seqs given up with a gap.
const V1_GAP: u64 = 8;
const V2_GAP: u64 = 5;
/// Between two plain playlist requests of a reader.
const READ_PACE: Duration = Duration::from_millis(40);

/// Every host these tests start runs in the replicated mode (a host inherits the test's
/// environment; every test here sets the same value).
fn lag_on() {
    std::env::set_var("CHALKSTREAM_KV_LAG_MS", LAG_MS.to_string());
}

fn assert_lagged(host: &Host) {
    let says = format!("key-value lag: a request sees other requests' writes {LAG_MS} ms late");
    assert!(host.log().contains(&says), "{} does not say `{says}`:\n{}", host.base(), host.log());
}

/// Two lagging hosts on one SQLite file, with retention [`RETENTION`]. (Hosts drop before the
/// store's directory.)
struct Pair {
    a: Host,
    b: Host,
    store: SharedStore,
}

/// The pair the tests running at the same time share: starting a host compiles the component,
/// which takes long unoptimised on a small machine. Stopped when the last test holding it ends.
fn pair() -> Arc<Pair> {
    static PAIR: Mutex<Weak<Pair>> = Mutex::new(Weak::new());
    let mut shared = PAIR.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(pair) = shared.upgrade() {
        return pair;
    }
    lag_on();
    let store = SharedStore::sqlite();
    let (a, b) = store.start_pair_with(&[("stream_retention", RETENTION)]);
    assert_lagged(&a);
    assert_lagged(&b);
    let pair = Arc::new(Pair { a, b, store });
    *shared = Arc::downgrade(&pair);
    pair
}

// ---------------------------------------------------------------------------------------------
// A stream and what its uploader was told
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Log {
    /// When the first request for each seq was sent (ms since the epoch): the seq was not
    /// stored before.
    sent: BTreeMap<u64, u64>,
    /// When each seq's acknowledgement (`200`/`201`, its last one when sent twice) arrived: it was
    /// written before.
    acked: BTreeMap<u64, u64>,
    gaps: BTreeSet<u64>,
}

struct Stream {
    name: &'static str,
    /// When the test made it (ms since the epoch), for messages.
    t0: u64,
    v2: bool,
    session: String,
    id: String,
    log: Mutex<Log>,
}

impl Stream {
    fn new(name: &'static str, v2: bool) -> Stream {
        let session = new_session();
        Stream { name, t0: now_ms(), v2, id: stream_id(&session), session, log: Mutex::new(Log::default()) }
    }

    fn bytes(&self, seq: u64) -> &'static [u8] {
        if self.v2 {
            &media_parts()[seq as usize % media_parts().len()].segment.bytes
        } else {
            &media()[seq as usize % media().len()].bytes
        }
    }

    fn part_bytes(&self, seq: u64, part: u32) -> &'static [u8] {
        &media_parts()[seq as usize % media_parts().len()].parts[part as usize]
    }

    fn sending(&self, seq: u64) {
        self.log.lock().unwrap().sent.entry(seq).or_insert_with(now_ms);
    }

    fn acknowledged(&self, seq: u64, gap: bool) {
        let mut log = self.log.lock().unwrap();
        log.acked.insert(seq, now_ms());
        if gap {
            log.gaps.insert(seq);
        }
    }

    /// Rule 1: the seqs a playlist asked for at `asked` and answered at `answered` lists: each
    /// acknowledged a lag (and the slack) before it was asked for, and surely not expired when
    /// it was answered (stored at or after it was sent, so at most `answered - sent` old).
    fn must_list(&self, asked: u64, answered: u64) -> Vec<u64> {
        let log = self.log.lock().unwrap();
        log.acked
            .iter()
            .filter(|(seq, &at)| at + LAG_MS + SLACK_MS <= asked && answered + 50 <= log.sent[seq] + RETENTION_MS)
            .map(|(seq, _)| *seq)
            .collect()
    }

    /// Acknowledged seqs not yet listed although they were acknowledged before `asked` (a lag
    /// at work).
    fn acked_before(&self, asked: u64) -> BTreeSet<u64> {
        self.log.lock().unwrap().acked.iter().filter(|(_, &at)| at <= asked).map(|(seq, _)| *seq).collect()
    }

    /// Whether `seq` may have expired by `answered`: stored no earlier than it was sent.
    fn may_have_expired(&self, seq: u64, answered: u64) -> bool {
        self.log.lock().unwrap().sent.get(&seq).is_some_and(|&sent| answered + 50 > sent + RETENTION_MS)
    }

    fn was_sent(&self, seq: u64) -> bool {
        self.log.lock().unwrap().sent.contains_key(&seq)
    }

    fn is_gap(&self, seq: u64) -> bool {
        seq == if self.v2 { V2_GAP } else { V1_GAP }
    }

    /// What the log says about `seq`, for failure messages (times relative to `now`).
    fn describe(&self, seq: u64, now: u64) -> String {
        let log = self.log.lock().unwrap();
        let ago = |t: Option<&u64>| t.map_or("never".to_owned(), |t| format!("{} ms before", now as i64 - *t as i64));
        format!("seq {seq}: sent {}, acknowledged {}", ago(log.sent.get(&seq)), ago(log.acked.get(&seq)))
    }
}

#[derive(Default)]
struct Stats {
    playlists: AtomicU64,
    /// Playlists that did not (yet) list a seq acknowledged before they were asked for.
    late: AtomicU64,
    must_listed: AtomicU64,
    served: AtomicU64,
    parts_served: AtomicU64,
    held_timeouts: AtomicU64,
    commit_retries: AtomicU64,
    expired_404: AtomicU64,
    gaps_404: AtomicU64,
}

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn acknowledged(resp: &Resp) -> bool {
    resp.status == 200 || resp.status == 201
}

// ---------------------------------------------------------------------------------------------
// Uploaders
// ---------------------------------------------------------------------------------------------

/// Sends `send` to both hosts at once (a retrying client behind a load balancer): both answers.
fn to_both(hosts: [&Host; 2], send: impl Fn(&Host) -> Resp + Sync) -> [Resp; 2] {
    thread::scope(|s| {
        let a = s.spawn(|| send(hosts[0]));
        let b = s.spawn(|| send(hosts[1]));
        [a.join().unwrap(), b.join().unwrap()]
    })
}

/// The v1 stream: whole segments, each to the other host than the one before; every seventh to
/// both at once; seq [`V1_GAP`] given up; then Stop through the other host right after the last
/// acknowledgement, as the extension does.
fn upload_v1(stream: &Stream, hosts: [&Host; 2], until: Instant) {
    let mut seq = 0;
    while Instant::now() < until || seq <= V1_GAP + 1 {
        let host = hosts[seq as usize % 2];
        stream.sending(seq);
        if seq == V1_GAP {
            let resp = host.request("POST", &format!("/ingest/{}/{seq}/gap", stream.session), &[("X-Duration", "2")], Some(b""));
            resp.assert_status(201);
            stream.acknowledged(seq, true);
        } else {
            let segment = &media()[seq as usize % media().len()];
            let duration = segment.x_duration();
            let mut headers = vec![("X-Duration", duration.as_str())];
            if seq == V1_GAP + 1 {
                headers.push(("X-Discontinuity", "1"));
            }
            let answers = if seq % 7 == 3 {
                to_both(hosts, |host| host.put_segment(&stream.session, seq, &headers, &segment.bytes)).to_vec()
            } else {
                vec![host.put_segment(&stream.session, seq, &headers, &segment.bytes)]
            };
            for resp in &answers {
                assert!(acknowledged(resp), "v1 seq {seq}: these are its only bytes, so 200 or 201: {resp}");
            }
            stream.acknowledged(seq, false);
        }
        if seq == 0 {
            // Uploads within the lag of a stream's first one make records of their own (a
            // known limit, ARCHITECTURE.md "Eventual consistency"); a broadcaster's second
            // segment comes a segment later.
            thread::sleep(Duration::from_millis(2 * LAG_MS));
        }
        seq += 1;
        thread::sleep(V1_PACE);
    }
    hosts[seq as usize % 2].end(&stream.session).assert_status(200);
}

/// A commit, retried while the store does not show it all of the segment's parts yet (each was
/// written by another request, shown a lag later): the extension retries that `409` too.
fn commit(stream: &Stream, host: &Host, seq: u64, stats: &Stats) -> Resp {
    let deadline = Instant::now() + Duration::from_millis(10 * (LAG_MS + SLACK_MS));
    loop {
        let resp = host.commit(&stream.session, seq, PARTS_PER_SEGMENT as u32);
        if resp.status == 409 && resp.text().contains("is not stored") && Instant::now() < deadline {
            count(&stats.commit_retries);
            thread::sleep(Duration::from_millis(30));
            continue;
        }
        return resp;
    }
}

/// The v2 stream: parts and commits, each request to the other host than the one before; every
/// seventh commit to both at once; seq [`V2_GAP`] given up before any part of it; then Stop.
fn upload_v2(stream: &Stream, hosts: [&Host; 2], until: Instant, stats: &Stats) {
    let (mut seq, mut turn) = (0u64, 0usize);
    let mut next_host = || {
        turn += 1;
        hosts[turn % 2]
    };
    while Instant::now() < until || seq <= V2_GAP + 1 {
        stream.sending(seq);
        if seq == V2_GAP {
            let resp = next_host().request("POST", &format!("/ingest/{}/{seq}/gap", stream.session), &[("X-Duration", "1")], Some(b""));
            resp.assert_status(201);
            stream.acknowledged(seq, true);
        } else {
            let m = &media_parts()[seq as usize % media_parts().len()];
            for part in 0..PARTS_PER_SEGMENT {
                let host = next_host();
                let resp = if part == 0 && seq == V2_GAP + 1 {
                    let (duration, target) = (secs(m.durations_ms[0]), part_target());
                    let headers = [
                        ("X-Duration", duration.as_str()),
                        ("X-Part-Target", target.as_str()),
                        ("X-Target-Duration", "1"),
                        ("X-Independent", "1"),
                        ("X-Discontinuity", "1"),
                    ];
                    host.put_part(&stream.session, seq, 0, &headers, &m.parts[0])
                } else {
                    upload_part(host, &stream.session, seq, part)
                };
                assert!(acknowledged(&resp), "v2 part {seq}.{part}: {resp}");
                thread::sleep(PART_PACE);
            }
            let answers = if seq % 7 == 3 {
                to_both(hosts, |host| commit(stream, host, seq, stats)).to_vec()
            } else {
                vec![commit(stream, next_host(), seq, stats)]
            };
            for resp in &answers {
                assert!(acknowledged(resp), "v2 commit {seq}: its parts are all stored: {resp}");
            }
            stream.acknowledged(seq, false);
        }
        if seq == 0 {
            thread::sleep(Duration::from_millis(2 * LAG_MS));
        }
        seq += 1;
    }
    next_host().end(&stream.session).assert_status(200);
}

// ---------------------------------------------------------------------------------------------
// Readers
// ---------------------------------------------------------------------------------------------

/// The playlist as served (`ll_check` checks its `#EXT-X-GAP` lines and their `GAP=YES` parts),
/// and the seqs those lines marked.
fn gap_seqs(text: &str) -> (String, BTreeSet<u64>) {
    let (mut plain, mut gaps, mut gap) = (String::new(), BTreeSet::new(), false);
    for line in text.lines() {
        if line == "#EXT-X-GAP" {
            gap = true;
        }
        if !line.starts_with('#') && std::mem::take(&mut gap) {
            let name = line.rsplit('/').next().unwrap();
            gaps.insert(name.strip_suffix(".ts").and_then(|s| s.parse().ok()).expect("a segment URI"));
        }
        plain.push_str(line);
        plain.push('\n');
    }
    (plain, gaps)
}

/// The rules' names, as violations are reported.
const RULE_1: &str = "1: an acknowledged seq is listed once shown, until it expires";
const RULE_2: &str = "2: media and discontinuity sequences never go back";
const RULE_3: &str = "3: the playlist passes common::ll_check (rfc8216bis)";
const RULE_3_SEQS: &str = "3: a listed seq was sent, and is #EXT-X-GAP exactly when given up";
const RULE_4: &str = "4: a listed segment or part is served with the bytes uploaded";
const ENDED: &str = "an ended playlist stays ended";

/// Every broken rule, with how often and the first few instances: the readers go on after one,
/// so a run reports all it finds.
#[derive(Default)]
struct Violations(Mutex<BTreeMap<&'static str, (u64, Vec<String>)>>);

impl Violations {
    fn add(&self, rule: &'static str, what: String) {
        let mut all = self.0.lock().unwrap();
        let (count, examples) = all.entry(rule).or_default();
        *count += 1;
        if examples.len() < 3 {
            examples.push(what);
        }
    }

    fn report(&self) -> Option<String> {
        let all = self.0.lock().unwrap();
        (!all.is_empty()).then(|| {
            all.iter()
                .map(|(rule, (count, examples))| format!("=== rule {rule}: broken {count} times; first:\n{}", examples.join("\n---\n")))
                .collect::<Vec<_>>()
                .join("\n")
        })
    }
}

/// `ll_check::check`, its panic caught: `Err` with its message. (Readers are named
/// `lagging-reader-*`, and the panic hook keeps their checker panics off stderr: the violation
/// report has them.)
fn ll_checked(plain: &str) -> Result<ll_check::LlPlaylist, String> {
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let reader = thread::current().name().is_some_and(|name| name.starts_with("lagging-reader-"));
            if !(reader && info.location().is_some_and(|at| at.file().ends_with("ll_check.rs"))) {
                default(info);
            }
        }));
    });
    std::panic::catch_unwind(|| ll_check::check(plain)).map_err(|e| {
        e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
    })
}

/// One viewer of `stream` polling both hosts in turn until `stop`, checking the four rules (see
/// the module doc) on every playlist; `blocking` asks for the hinted part (`_HLS_msn`).
fn read(stream: &Stream, hosts: [&Host; 2], blocking: bool, stop: &AtomicBool, stats: &Stats, broken: &Violations) {
    let who = format!("{} reader{}", stream.name, if blocking { " (blocking)" } else { "" });
    let mut last: Option<(u64, u64, String)> = None;
    let mut ended = false;
    let (mut served, mut parts_served) = (BTreeSet::new(), BTreeSet::new());
    let (mut hint, mut turn) = (None, 0usize);
    while !stop.load(Ordering::SeqCst) {
        turn += 1;
        let (host, other) = (hosts[turn % 2], hosts[(turn + 1) % 2]);
        let query = match hint.filter(|_| blocking) {
            Some((seq, part)) => format!("?_HLS_msn={seq}&_HLS_part={part}"),
            None => String::new(),
        };
        let asked = now_ms();
        let resp = host.get(&format!("/playlist/{}.m3u8{query}", stream.id));
        let answered = now_ms();
        let must = stream.must_list(asked, answered);
        let at = format!("{who}: {}{query} asked at +{} ms", host.base(), asked - stream.t0);
        match resp.status {
            200 => {}
            404 => {
                if let Some(&seq) = must.first() {
                    broken.add(RULE_1, format!("{at} answered 404; acknowledged {}", stream.describe(seq, asked)));
                }
                thread::sleep(READ_PACE);
                continue;
            }
            503 if !query.is_empty() => {
                // A held request that timed out (documented): ask plainly next.
                count(&stats.held_timeouts);
                hint = None;
                continue;
            }
            _ => panic!("{at}: {resp}"),
        }
        let text = resp.text();
        let (plain, gaps) = gap_seqs(&text);
        // Rule 3; the other rules then read the playlist with the plain parser.
        let (media, disc, seqs, parts, is_ended, next_hint) = match ll_checked(&plain) {
            Ok(p) => (p.media_sequence, p.discontinuity_sequence, p.seqs(), p.parts(), p.ended, p.hint),
            Err(why) => {
                broken.add(RULE_3, format!("{at}: {why}"));
                let p = Playlist::parse(&plain);
                (p.media_sequence.unwrap_or(0), p.discontinuity_sequence.unwrap_or(0), p.seqs(), Vec::new(), p.ended, None)
            }
        };
        // Rule 2.
        if let Some((m, d, before)) = &last {
            if media < *m || disc < *d {
                broken.add(RULE_2, format!("{at}: from {m}/{d} ({before}) to {media}/{disc}:\n{text}"));
            }
        }
        last = Some((media, disc, at.clone()));
        if ended && !is_ended {
            broken.add(ENDED, format!("{at}:\n{text}"));
        }
        ended = is_ended;
        // Rule 1.
        let listed: BTreeSet<u64> = seqs.into_iter().collect();
        for seq in must.iter().filter(|seq| !listed.contains(seq)) {
            broken.add(RULE_1, format!("{at}: acknowledged {} is not listed:\n{text}", stream.describe(*seq, asked)));
        }
        stats.must_listed.fetch_add(must.len() as u64, Ordering::Relaxed);
        if stream.acked_before(asked).iter().any(|seq| !listed.contains(seq) && *seq >= media) {
            count(&stats.late);
        }
        for &seq in &listed {
            if !stream.was_sent(seq) || gaps.contains(&seq) != stream.is_gap(seq) {
                broken.add(RULE_3_SEQS, format!("{at}: seq {seq} (sent: {}, given up: {}):\n{text}", stream.was_sent(seq), stream.is_gap(seq)));
            }
        }
        // Rule 4, from the other host, each seq and part once per reader.
        for &seq in listed.difference(&served.clone()) {
            served.insert(seq);
            let chunk = other.get(&format!("/chunks/{}/{seq}.ts", stream.id));
            if chunk.status == 404 && stream.is_gap(seq) {
                count(&stats.gaps_404);
            } else if chunk.status == 404 && stream.may_have_expired(seq, now_ms()) {
                count(&stats.expired_404);
            } else if chunk.status != 200 || stream.is_gap(seq) || chunk.body != stream.bytes(seq) {
                broken.add(RULE_4, format!("{at}: listed seq {seq} from {}: {chunk} (the bytes uploaded: {})", other.base(), chunk.body == stream.bytes(seq)));
            } else {
                count(&stats.served);
            }
        }
        for part in parts {
            if !parts_served.insert((part.seq, part.part)) {
                continue;
            }
            let chunk = other.get(&part.uri);
            if part.gap {
                // A given-up seq's parts (`GAP=YES`): no media, clients do not load them.
                if chunk.status != 404 || !stream.is_gap(part.seq) {
                    broken.add(RULE_4, format!("{at}: GAP=YES part {}.{} from {}: {chunk}", part.seq, part.part, other.base()));
                }
            } else if chunk.status == 404 && stream.may_have_expired(part.seq, now_ms()) {
                count(&stats.expired_404);
            } else if chunk.status != 200 || chunk.body != stream.part_bytes(part.seq, part.part) {
                broken.add(RULE_4, format!("{at}: listed part {}.{} from {}: {chunk}", part.seq, part.part, other.base()));
            } else {
                count(&stats.parts_served);
            }
        }
        hint = next_hint;
        count(&stats.playlists);
        if !blocking || hint.is_none() {
            thread::sleep(READ_PACE);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

#[test]
fn uploads_gaps_ends_and_retention_on_two_lagging_hosts_keep_the_rules() {
    let pair = pair();
    let hosts = [&pair.a, &pair.b];
    media();
    media_parts();
    let (v1, v2) = (Stream::new("v1", false), Stream::new("v2", true));
    let stats = Stats::default();
    let broken = Violations::default();
    let stop = AtomicBool::new(false);
    let started = Instant::now();

    thread::scope(|s| {
        let readers: Vec<_> = [(&v1, false), (&v1, false), (&v2, false), (&v2, true)]
            .into_iter()
            .enumerate()
            .map(|(n, (stream, blocking))| {
                let (stop, stats, broken) = (&stop, &stats, &broken);
                thread::Builder::new()
                    .name(format!("lagging-reader-{n}"))
                    .spawn_scoped(s, move || read(stream, hosts, blocking, stop, stats, broken))
                    .unwrap()
            })
            .collect();
        // Readers stop when this scope ends, whatever happened (the scope waits for them).
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let stop_readers = StopOnDrop(&stop);
        let until = Instant::now() + UPLOAD_FOR;
        let (v1, v2, stats) = (&v1, &v2, &stats);
        let uploaders = [s.spawn(move || upload_v1(v1, hosts, until)), s.spawn(move || upload_v2(v2, hosts, until, stats))];
        for uploader in uploaders {
            uploader.join().expect("an uploader failed (its panic is above)");
        }
        // Stop was sent right after the last acknowledgement; the readers see a lag more.
        thread::sleep(Duration::from_millis(2 * (LAG_MS + SLACK_MS)));
        drop(stop_readers);
        for reader in readers {
            reader.join().expect("a reader failed (its panic is above)");
        }
    });

    // Once every write has shown, each host lists every acknowledged seq that has not expired
    // (the window moves on between two requests: retention). Whether Stop has ended the
    // playlists by then is printed, not asserted: it is none of the rules above.
    for stream in [&v1, &v2] {
        let mut ended = Vec::new();
        for host in hosts {
            let asked = now_ms();
            let (_, p) = host.playlist(&stream.id);
            let listed = p.seqs();
            for seq in stream.must_list(asked, now_ms()).into_iter().filter(|seq| !listed.contains(seq)) {
                broken.add(RULE_1, format!("{}, after the run: {} is not listed by {}:\n{}", stream.name, stream.describe(seq, asked), host.base(), p.text));
            }
            ended.push(p.ended);
        }
        eprintln!("{}: Stop acknowledged a lag and the slack ago; ended on each host: {ended:?}", stream.name);
    }
    let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
    eprintln!(
        "{} playlists checked in {:.1?} ({} listed late, {} acknowledged seqs required and listed), {} segments and {} parts \
         served as uploaded, {} gaps answered 404, {} 404s of segments that may have expired, {} held requests timed out, {} commits retried \
         until their parts showed; v1 seqs 0..{}, v2 seqs 0..{}",
        n(&stats.playlists),
        started.elapsed(),
        n(&stats.late),
        n(&stats.must_listed),
        n(&stats.served),
        n(&stats.parts_served),
        n(&stats.gaps_404),
        n(&stats.expired_404),
        n(&stats.held_timeouts),
        n(&stats.commit_retries),
        v1.log.lock().unwrap().acked.len(),
        v2.log.lock().unwrap().acked.len(),
    );
    if let Some(report) = broken.report() {
        panic!("rules broken on a lagging store:\n{report}");
    }
    assert!(n(&stats.playlists) >= 40, "too few playlists checked");
    assert!(n(&stats.late) > 0, "no playlist missed a seq acknowledged before it was asked for: is the lag on?");
    assert!(n(&stats.must_listed) > 0, "no playlist was old enough to check");
}

/// The mode cannot be silently off: an upload acknowledged by host A is not seen by the next
/// request, on host B or on A, nor is it in the SQLite file; a lag later it is, on both.
#[test]
fn another_requests_write_shows_only_after_the_lag() {
    let pair = pair();
    let (a, b) = (&pair.a, &pair.b);
    let rows = |id: &str| -> i64 {
        let conn = rusqlite::Connection::open_with_flags(pair.store.sqlite_file(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn.query_row("SELECT count(*) FROM spin_key_value WHERE key LIKE ?1", [format!("%{id}%")], |r| r.get(0)).unwrap()
    };
    let segment = &media()[0];
    // A busy machine may take a lag to answer the requests below: then again, with a new stream.
    for _ in 0..5 {
        let session = new_session();
        let id = stream_id(&session);
        let sent = Instant::now();
        a.upload(&session, 0, &segment.x_duration(), None, &segment.bytes).assert_status(201);
        let on_b = b.get(&format!("/playlist/{id}.m3u8"));
        let on_a = a.get(&format!("/playlist/{id}.m3u8"));
        let stored = rows(&id);
        if sent.elapsed() >= Duration::from_millis(LAG_MS) {
            eprintln!("the upload and the reads took {:?}, more than the lag: again", sent.elapsed());
            continue;
        }
        assert_eq!(on_b.status, 404, "host B sees host A's upload at once: {on_b}");
        assert_eq!(on_a.status, 404, "another request on host A sees its upload at once: {on_a}");
        assert_eq!(stored, 0, "the upload reached the SQLite file at once");
        thread::sleep(Duration::from_millis(LAG_MS + SLACK_MS).saturating_sub(sent.elapsed()));
        for host in [b, a] {
            let (_, p) = host.playlist(&id);
            assert_eq!(p.seqs(), [0], "{}:\n{}", host.base(), p.text);
        }
        assert!(rows(&id) > 0, "the upload never reached the SQLite file");
        return;
    }
    panic!("five uploads and reads each took longer than the lag of {LAG_MS} ms");
}

/// `--kv-limits` holds in the replicated mode: the key count sees the writes still queued, so a
/// store that fills within the lag of its first write is refused (`503`) although the SQLite
/// file is still empty, and once every write has shown it holds no more keys than the limit.
#[test]
fn the_key_limit_counts_writes_still_queued() {
    lag_on();
    const KEYS: i64 = 12;
    let host = Host::with_args(&[], &["--kv-limits", &format!("keys={KEYS}")]);
    assert_lagged(&host);
    let session = new_session();
    let sent = Instant::now();
    let mut answers = Vec::new();
    for seq in 0..20 {
        let resp = host.upload(&session, seq, "2", None, &ts_packets(4, seq));
        let refused = resp.status == 503;
        answers.push(resp);
        if refused {
            break;
        }
    }
    let refused = answers.last().unwrap();
    assert_eq!(refused.status, 503, "{KEYS} keys never filled: {:?}", answers.iter().map(|r| r.status).collect::<Vec<_>>());
    assert!(refused.header("retry-after").is_some(), "{refused}");
    let within_lag = sent.elapsed() < Duration::from_millis(LAG_MS);
    thread::sleep(Duration::from_millis(LAG_MS + SLACK_MS));
    let rows = host.kv_rows().len() as i64;
    eprintln!(
        "{} uploads answered {:?} ({} the lag); then the store held {rows} keys",
        answers.len(),
        answers.iter().map(|r| r.status).collect::<Vec<_>>(),
        if within_lag { "within" } else { "not all within" }
    );
    assert!(rows <= KEYS, "{rows} keys under a limit of {KEYS}");
    assert!(rows >= KEYS - 4, "the store was refused at {rows} keys of {KEYS}");
}
