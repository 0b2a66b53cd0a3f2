//! Scale-out over real HTTP: two `chalkstream-host` processes run the built component on one
//! shared key-value store — a real `redis-server` of the test's own, or one SQLite file — as
//! instances behind a load balancer would. A broadcaster's uploads alternate between them, some
//! seqs go to both at once (a retrying client behind a load balancer), viewers poll both, and
//! one instance is killed with SIGKILL at random moments. The rule under test is the storage
//! layout's: an acknowledged segment is never lost, never listed twice, and reads back
//! byte-identical from any instance.
//!
//! Needs the component (`sh scripts/build-component`), `ffmpeg` and `redis-server`
//! (`scripts/setup --test`). Run: `cargo test --release -p chalkstream-host --test scale_out`.
//! The kill moments come from a seed printed by each test; `CHALKSTREAM_SCALE_SEED=N` repeats it.

mod common;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use common::*;

/// Kills per crash test: each costs a host restart (the component is compiled again).
const KILLS: usize = 4;
/// Uploads stop here even if the kills are not done (a bound, never reached in practice).
const MAX_SEQS: u64 = 1000;
/// Between two uploads, so a hundred-odd segments span the kills without flooding the store.
const UPLOAD_PACE: Duration = Duration::from_millis(25);
/// Between two uploads while the killed instance restarts (compiling the component takes
/// seconds, more on a busy machine), so the count of segments does not grow with its slowness.
const UPLOAD_PACE_ONE_DOWN: Duration = Duration::from_millis(200);
/// Uploads after the last restart, so the restarted instance takes some too.
const AFTER_LAST_KILL: u64 = 10;

// ---------------------------------------------------------------------------------------------
// The setting: a store, two instances, a broadcast
// ---------------------------------------------------------------------------------------------

/// One broadcast: a session, and for every seq its body (real H.264/AAC MPEG-TS from ffmpeg,
/// cycled), duration and capture time.
struct Broadcast {
    session: String,
    id: String,
    start_ms: u64,
    /// Uploads in flight to each instance (by index in `bases`), for the killer to aim at.
    in_flight: [AtomicUsize; 2],
}

impl Broadcast {
    fn new() -> Broadcast {
        let session = new_session();
        Broadcast { id: stream_id(&session), session, start_ms: now_ms(), in_flight: Default::default() }
    }

    fn segment(&self, seq: u64) -> &'static Segment {
        let media = media();
        &media[seq as usize % media.len()]
    }

    fn pdt(&self, seq: u64) -> String {
        let before: u64 = (0..seq).map(|s| self.segment(s).duration_ms).sum();
        rfc3339_ms(self.start_ms + before)
    }

    /// One `PUT /ingest/{session}/{seq}.ts` to `base`; `Err` for transport errors.
    fn put(&self, agent: &ureq::Agent, base: &str, seq: u64) -> Result<Resp, String> {
        let segment = self.segment(seq);
        let (duration, pdt) = (segment.x_duration(), self.pdt(seq));
        let headers = [("X-Duration", duration.as_str()), ("X-Program-Date-Time", pdt.as_str())];
        try_request(agent, base, "PUT", &format!("/ingest/{}/{seq}.ts", self.session), &headers, Some(&segment.bytes))
    }

    /// PUTs `seq` until an instance acknowledges it, starting with `bases[first]` and moving on
    /// to the next instance after a transport error or a 5xx (an instance killed mid-request),
    /// as a retrying client behind a load balancer does. Returns the acknowledging answer and
    /// how many attempts failed. Any 4xx fails the test: these bodies are valid and a seq never
    /// gets two different bodies.
    fn put_until_acknowledged(&self, agent: &ureq::Agent, bases: &[String], first: usize, seq: u64) -> (Resp, usize) {
        let mut failed = 0;
        for attempt in 0..200 {
            let i = (first + attempt) % bases.len();
            self.in_flight[i].fetch_add(1, Ordering::SeqCst);
            let answer = self.put(agent, &bases[i], seq);
            self.in_flight[i].fetch_sub(1, Ordering::SeqCst);
            match answer {
                Ok(resp) if resp.status == 200 || resp.status == 201 => {
                    assert_eq!(resp.json()["seq"], seq, "{resp}");
                    return (resp, failed);
                }
                Ok(resp) if resp.status >= 500 => failed += 1,
                Ok(resp) => panic!("seq {seq} refused; these are its only bytes, so the wire contract answers 200 or 201: {resp}"),
                Err(_) => failed += 1,
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("seq {seq}: no instance acknowledged it in 200 attempts");
    }
}

// ---------------------------------------------------------------------------------------------
// Viewers
// ---------------------------------------------------------------------------------------------

/// Sets its flag when dropped, so the viewers stop even when the uploader panics (a scope
/// waits for its threads before it passes the panic on).
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// What the broadcaster has had acknowledged: every seq up to `through` (-1: none yet).
struct Acked {
    through: AtomicI64,
}

/// A viewer polling the playlist on every instance in turn until `done`, then reporting how many
/// playlists it checked. Every playlist it gets must list each seq acknowledged before the
/// request was sent, as the unbroken run from seq 0, each once, and never fewer segments than a
/// playlist it got earlier from either instance. The newest segment listed is fetched from the
/// other instance and must be the bytes uploaded. Transport errors are allowed (an instance is
/// being killed); a 5xx is not.
fn watch(b: &Broadcast, bases: &[String], acked: &Acked, done: &AtomicBool) -> usize {
    let agent = new_agent();
    let (mut checked, mut longest, mut turn) = (0usize, 0usize, 0usize);
    while !done.load(Ordering::SeqCst) {
        turn += 1;
        let base = &bases[turn % bases.len()];
        let other = &bases[(turn + 1) % bases.len()];
        let through = acked.through.load(Ordering::SeqCst);
        let Ok(resp) = try_request(&agent, base, "GET", &format!("/playlist/{}.m3u8", b.id), &[], None) else {
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        if through < 0 && resp.status == 404 {
            thread::sleep(Duration::from_millis(10));
            continue;
        }
        resp.assert_status(200);
        let playlist = Playlist::parse(&resp.text());
        let seqs = playlist.seqs();
        assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>(), "not the unbroken run from 0:\n{}", playlist.text);
        assert!(
            seqs.len() as i64 > through,
            "{base} lists {} segments, but seqs 0..={through} were acknowledged before it was asked:\n{}",
            seqs.len(),
            playlist.text
        );
        assert!(seqs.len() >= longest, "{base} lists {} segments after a playlist with {longest}", seqs.len());
        longest = seqs.len();
        if let Some(entry) = playlist.entries.last() {
            if let Ok(chunk) = try_request(&agent, other, "GET", &playlist.entry_path(entry), &[], None) {
                chunk.assert_status(200);
                assert!(chunk.body == b.segment(entry.seq).bytes, "{other}: seq {} differs from the upload", entry.seq);
            }
        }
        checked += 1;
        thread::sleep(Duration::from_millis(10));
    }
    checked
}

// ---------------------------------------------------------------------------------------------
// After the broadcast
// ---------------------------------------------------------------------------------------------

/// Both instances serve the same playlist, listing seqs `0..count` once each, and every segment
/// reads back from either instance as the bytes uploaded; then Stop through `stop_via` is seen
/// through the other one.
fn assert_instances_agree(b: &Broadcast, hosts: [&Host; 2], count: u64, stop_via: usize) {
    let (_, pa) = hosts[0].playlist(&b.id);
    let (_, pb) = hosts[1].playlist(&b.id);
    assert_eq!(pa.text, pb.text, "the two instances serve different playlists");
    assert!(!pa.ended, "ended before Stop:\n{}", pa.text);
    assert_eq!(pa.seqs(), (0..count).collect::<Vec<_>>(), "not every acknowledged seq listed once:\n{}", pa.text);
    for entry in &pa.entries {
        let sent = &b.segment(entry.seq).bytes;
        for host in hosts {
            let chunk = host.get(&pa.entry_path(entry));
            chunk.assert_status(200);
            assert!(chunk.body == *sent, "{}: seq {} differs from the upload", host.base(), entry.seq);
        }
    }
    for host in hosts {
        let status = host.status(&b.id);
        assert_eq!(status["state"], "live", "{status}");
        assert_eq!(status["segments"], count, "{status}");
    }

    hosts[stop_via].end(&b.session).assert_status(200);
    let other = hosts[1 - stop_via];
    let (_, ended) = other.playlist(&b.id);
    assert!(ended.ended, "Stop through one instance is not seen by the other:\n{}", ended.text);
    assert_eq!(ended.seqs(), pa.seqs(), "ending changed the segments:\n{}", ended.text);
    assert_eq!(other.status(&b.id)["state"], "ended");
    let (_, again) = hosts[stop_via].playlist(&b.id);
    assert_eq!(again.text, ended.text, "the two instances serve different ended playlists");
}

// ---------------------------------------------------------------------------------------------
// Two live instances
// ---------------------------------------------------------------------------------------------

#[test]
fn two_instances_on_one_redis_serve_one_stream_identically() {
    let store = SharedStore::redis();
    let (a, b) = store.start_pair();
    let bases = [a.base(), b.base()];
    let broadcast = Broadcast::new();
    let acked = Acked { through: AtomicI64::new(-1) };
    let done = AtomicBool::new(false);
    const COUNT: u64 = 24;

    let checked = thread::scope(|s| {
        let viewers: Vec<_> = (0..2).map(|_| s.spawn(|| watch(&broadcast, &bases, &acked, &done))).collect();
        let stop_viewers = SetOnDrop(&done);
        let agent = new_agent();
        for seq in 0..COUNT {
            if seq % 5 == 2 {
                // The same seq to both instances at once: both must acknowledge it.
                let answers: Vec<Resp> = thread::scope(|s| {
                    let sends: Vec<_> = bases
                        .iter()
                        .map(|base| {
                            let agent = new_agent();
                            let broadcast = &broadcast;
                            s.spawn(move || broadcast.put(&agent, base, seq).expect("transport"))
                        })
                        .collect();
                    sends.into_iter().map(|t| t.join().unwrap()).collect()
                });
                for resp in &answers {
                    assert!(
                        resp.status == 200 || resp.status == 201,
                        "the same bytes sent for seq {seq} to both instances at once must both be acknowledged \
                         (201, or 200 for the one that finds the other's commit): {resp}"
                    );
                }
            } else {
                let resp = broadcast.put(&agent, &bases[seq as usize % 2], seq).expect("transport");
                resp.assert_status(201);
            }
            acked.through.store(seq as i64, Ordering::SeqCst);
            thread::sleep(UPLOAD_PACE);
        }
        drop(stop_viewers);
        viewers.into_iter().map(|v| v.join().unwrap()).sum::<usize>()
    });
    eprintln!("viewers checked {checked} playlists");
    assert!(checked > 0, "no viewer got a playlist");

    assert_instances_agree(&broadcast, [&a, &b], COUNT, 0);

    // Redis holds the component's keys as they are (no prefix, no label) and the bytes raw.
    let redis = store.redis.as_ref().unwrap();
    let keys: Vec<String> = redis.dump().into_iter().map(|(k, _)| k).collect();
    assert!(keys.contains(&format!("stream/{}", broadcast.id)), "{keys:?}");
    assert!(keys.iter().any(|k| k.starts_with(&format!("seg/{}/", broadcast.id))), "{keys:?}");
}

/// Spin keeps a label's data in SQLite as rows `(label, key, value)` and in Redis as the keys
/// themselves with raw values, so copying one into the other is a migration: the copy serves the
/// very same stream.
#[test]
fn a_store_copied_between_sqlite_and_redis_serves_the_same_streams() {
    // SQLite -> Redis.
    let sqlite_host = Host::start();
    let first = Broadcast::new();
    for seq in 0..6 {
        first.put_until_acknowledged(&new_agent(), &[sqlite_host.base()], 0, seq);
    }
    sqlite_host.end(&first.session).assert_status(200);
    let rows = sqlite_host.kv_rows();
    assert!(rows.iter().all(|r| r.store == "default"), "{rows:?}");

    let store = SharedStore::redis();
    let redis = store.redis.as_ref().unwrap();
    let mut conn = redis.connect();
    for row in &rows {
        redis::cmd("SET").arg(&row.key).arg(&row.value).query::<()>(&mut conn).unwrap();
    }
    let redis_host = store.start();
    assert_same_stream(&first, &sqlite_host, &redis_host);

    // Redis -> SQLite (a file in Spin's layout, made here, named by a runtime config).
    let second = Broadcast::new();
    for seq in 0..6 {
        second.put_until_acknowledged(&new_agent(), &[redis_host.base()], 0, seq);
    }
    redis_host.end(&second.session).assert_status(200);
    let dir = tempdir("chalkstream-copy-");
    let db = dir.path().join("copied.db");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute(
            "CREATE TABLE spin_key_value (store TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, \
             PRIMARY KEY (store, key))",
            [],
        )
        .unwrap();
        for (key, value) in redis.dump() {
            conn.execute("INSERT INTO spin_key_value (store, key, value) VALUES ('default', ?1, ?2)", (&key, &value))
                .unwrap();
        }
    }
    let toml = format!("[key_value_store.default]\ntype = \"spin\"\npath = \"{}\"\n", db.display());
    let config = write_runtime_config(dir.path(), "runtime-config.toml", &toml);
    let copied = Host::with_args(&[], &["--runtime-config-file", config.to_str().unwrap()]);
    assert_same_stream(&second, &redis_host, &copied);
    assert_same_stream(&first, &sqlite_host, &copied);
}

/// `to` serves `b` exactly as `from` does: playlist, status and every segment.
fn assert_same_stream(b: &Broadcast, from: &Host, to: &Host) {
    let (_, want) = from.playlist(&b.id);
    let (_, got) = to.playlist(&b.id);
    assert_eq!(got.text, want.text, "{} and {} serve different playlists", from.base(), to.base());
    let (mut want_status, mut got_status) = (from.status(&b.id), to.status(&b.id));
    for status in [&mut want_status, &mut got_status] {
        let fields = status.as_object_mut().unwrap();
        fields.remove("playlist"); // absolute URLs name the instance
        fields.remove("player");
    }
    assert_eq!(got_status, want_status);
    for entry in &want.entries {
        let chunk = to.get(&want.entry_path(entry));
        chunk.assert_status(200);
        assert!(chunk.body == b.segment(entry.seq).bytes, "seq {} differs", entry.seq);
    }
}

// ---------------------------------------------------------------------------------------------
// One instance killed during uploads
// ---------------------------------------------------------------------------------------------

#[test]
fn nothing_acknowledged_is_lost_when_an_instance_on_redis_is_killed() {
    let store = SharedStore::redis();
    uploads_survive_sigkill(&store, "redis");
}

#[test]
fn nothing_acknowledged_is_lost_when_an_instance_on_one_sqlite_file_is_killed() {
    let store = SharedStore::sqlite();
    uploads_survive_sigkill(&store, "sqlite");
    // Spin resolves `path` against the runtime config file's directory.
    let conn = rusqlite::Connection::open(store.sqlite_file()).expect("shared/kv.db beside the runtime config");
    let rows: i64 = conn.query_row("SELECT count(*) FROM spin_key_value WHERE store = 'default'", [], |r| r.get(0)).unwrap();
    assert!(rows > 0, "no rows in {}", store.sqlite_file().display());
}

/// Uploads alternate between instances A and B (every fifth seq to both at once) while A is
/// killed with SIGKILL `KILLS` times at random moments and restarted; two viewers poll both.
/// Every seq is retried until acknowledged, and in the end both instances list all of them once,
/// byte-identical, and see each other's Stop.
fn uploads_survive_sigkill(store: &SharedStore, name: &str) {
    let seed = seed();
    eprintln!("{name}: seed {seed} (CHALKSTREAM_SCALE_SEED={seed} repeats these kill moments)");
    let (mut a, b) = store.start_pair();
    let bases = [a.base(), b.base()];
    let broadcast = Broadcast::new();
    let acked = Acked { through: AtomicI64::new(-1) };
    let (done, kills_done, a_down) = (AtomicBool::new(false), AtomicBool::new(false), AtomicBool::new(false));
    let (failed, mid_upload) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let kill_log = Mutex::new(Vec::new());

    let (count, checked) = thread::scope(|s| {
        let a = &mut a;
        let killer = s.spawn(|| {
            let mut rng = Rng(seed);
            // Kills land among uploads: none before the first acknowledgement.
            while acked.through.load(Ordering::SeqCst) < 0 && !done.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(5));
            }
            for _ in 0..KILLS {
                thread::sleep(Duration::from_millis(rng.below(600)));
                // Then wait for an upload to A (for at most a second) and kill it a random
                // 0-3 ms into that upload: most kills land mid-request.
                for _ in 0..10_000 {
                    if broadcast.in_flight[0].load(Ordering::SeqCst) > 0 {
                        break;
                    }
                    thread::sleep(Duration::from_micros(100));
                }
                thread::sleep(Duration::from_micros(rng.below(3000)));
                if broadcast.in_flight[0].load(Ordering::SeqCst) > 0 {
                    mid_upload.fetch_add(1, Ordering::SeqCst);
                }
                let at = acked.through.load(Ordering::SeqCst);
                a_down.store(true, Ordering::SeqCst);
                a.restart(); // SIGKILL, then the same command on the same port
                a_down.store(false, Ordering::SeqCst);
                kill_log.lock().unwrap().push(at);
            }
            kills_done.store(true, Ordering::SeqCst);
        });
        let viewers: Vec<_> = (0..2).map(|_| s.spawn(|| watch(&broadcast, &bases, &acked, &done))).collect();
        let stop_viewers = SetOnDrop(&done);

        let agent = new_agent();
        let (mut seq, mut last) = (0, None);
        while seq < MAX_SEQS && last.is_none_or(|last| seq < last) {
            let first = seq as usize % 2;
            if seq % 5 == 2 {
                thread::scope(|s| {
                    for i in 0..2 {
                        let (broadcast, bases, failed) = (&broadcast, &bases, &failed);
                        s.spawn(move || {
                            let (_, f) = broadcast.put_until_acknowledged(&new_agent(), bases, i, seq);
                            failed.fetch_add(f, Ordering::SeqCst);
                        });
                    }
                });
            } else {
                let (_, f) = broadcast.put_until_acknowledged(&agent, &bases, first, seq);
                failed.fetch_add(f, Ordering::SeqCst);
            }
            acked.through.store(seq as i64, Ordering::SeqCst);
            seq += 1;
            if last.is_none() && kills_done.load(Ordering::SeqCst) {
                last = Some(seq + AFTER_LAST_KILL);
            }
            thread::sleep(if a_down.load(Ordering::SeqCst) { UPLOAD_PACE_ONE_DOWN } else { UPLOAD_PACE });
        }
        killer.join().unwrap();
        drop(stop_viewers);
        let checked: usize = viewers.into_iter().map(|v| v.join().unwrap()).sum();
        (seq, checked)
    });
    eprintln!(
        "{name}: {count} segments acknowledged; A killed after seqs {:?}, {} of {KILLS} times during an upload to \
         it; {} upload attempts failed and were retried; viewers checked {checked} playlists",
        kill_log.lock().unwrap(),
        mid_upload.load(Ordering::SeqCst),
        failed.load(Ordering::SeqCst)
    );
    assert!(kills_done.load(Ordering::SeqCst), "the uploads ended before the kills");

    assert_instances_agree(&broadcast, [&a, &b], count, 1);
}

/// The seed of the kill moments: `CHALKSTREAM_SCALE_SEED`, else fresh from the OS.
fn seed() -> u64 {
    if let Some(seed) = std::env::var("CHALKSTREAM_SCALE_SEED").ok().and_then(|s| s.parse().ok()) {
        return seed;
    }
    let mut bytes = [0u8; 8];
    use std::io::Read;
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).expect("/dev/urandom");
    u64::from_le_bytes(bytes) | 1
}

/// xorshift64*: enough to place kills, and repeatable from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}
