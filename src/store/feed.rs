//! The commit feed: every durable commit group, in commit order, handed to the store's listener
//! (the outcome engine) on a thread of its own after the group's writers are answered, so the
//! engine's CPU work is off the writer's critical path.
//!
//! A read of derived state still sees every acknowledged write: a writer is answered only after
//! its group is published as durable, and readers of derived state first wait
//! ([`FeedPosition::settle`]) until the listener has applied everything durable at that moment.
//! The wait is for a feed position, never for a lock held across a commit.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{CommitListener, Committed};

/// The latest version of one resource a group wrote, owned by the feed.
#[derive(Debug, Clone)]
pub struct Change {
    /// Resource type.
    pub rtype: String,
    /// Logical id.
    pub id: String,
    /// Version number.
    pub version: u64,
    /// The resource JSON (None for a delete).
    pub resource: Option<Vec<u8>>,
    /// When the version was written (ms since the epoch).
    pub last_updated_ms: i64,
}

/// One durable commit group on the feed.
struct Group {
    seq: u64,
    changes: Vec<Change>,
    durable_at: Instant,
}

/// How far the feed has come: the last durable group and the last one the listener applied
/// (store sequence numbers).
#[derive(Debug, Default)]
pub struct FeedPosition {
    state: Mutex<(u64, u64)>,
    moved: Condvar,
}

/// Longest a reader waits for the listener before answering with what it has (a listener that
/// stopped must not stop reads).
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

impl FeedPosition {
    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, u64)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait until the listener has applied every group that was durable when this was called.
    pub fn settle(&self) {
        let mut st = self.lock();
        let target = st.0;
        let deadline = Instant::now() + SETTLE_LIMIT;
        while st.1 < target {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    durable = target,
                    applied = st.1,
                    "the commit feed's listener is behind; answering with derived state as it stands"
                );
                return;
            }
            st = self
                .moved
                .wait_timeout(st, left)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// (last durable, last applied) sequence numbers.
    pub fn get(&self) -> (u64, u64) {
        *self.lock()
    }
}

/// The feed: its position, the listener and the thread that runs it.
pub struct Feed {
    position: Arc<FeedPosition>,
    listener: Arc<RwLock<Option<Arc<dyn CommitListener>>>>,
    tx: Mutex<Option<Sender<Group>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Feed {
    /// Start the feed at sequence number `seq` (what the store holds when opened).
    pub fn start(seq: u64) -> std::io::Result<Feed> {
        let position = Arc::new(FeedPosition {
            state: Mutex::new((seq, seq)),
            moved: Condvar::new(),
        });
        let listener: Arc<RwLock<Option<Arc<dyn CommitListener>>>> = Arc::new(RwLock::new(None));
        let (tx, rx) = channel::<Group>();
        let thread = {
            let position = position.clone();
            let listener = listener.clone();
            std::thread::Builder::new()
                .name("commit-feed".into())
                .spawn(move || run(rx, &position, &listener))?
        };
        Ok(Feed {
            position,
            listener,
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The feed's position, for readers of derived state.
    pub fn position(&self) -> Arc<FeedPosition> {
        self.position.clone()
    }

    /// Install the listener told about each durable group from now on.
    pub fn set_listener(&self, l: Arc<dyn CommitListener>) {
        if let Ok(mut slot) = self.listener.write() {
            *slot = Some(l);
        }
    }

    /// Publish a durable group (called by the writer before it answers the group's writers).
    pub fn publish(&self, seq: u64, changes: Vec<Change>) {
        self.position.lock().0 = seq;
        let group = Group {
            seq,
            changes,
            durable_at: Instant::now(),
        };
        let sent = self
            .tx
            .lock()
            .ok()
            .and_then(|tx| tx.as_ref().map(|tx| tx.send(group).is_ok()));
        if sent != Some(true) {
            // no feed thread: nothing will apply it, so nobody may wait for it
            let mut st = self.position.lock();
            st.1 = st.1.max(seq);
            self.position.moved.notify_all();
        }
    }

    /// Apply what is queued, then stop the feed thread.
    pub fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

/// The feed thread: apply each group in order, then move the applied position.
fn run(
    rx: Receiver<Group>,
    position: &FeedPosition,
    listener: &RwLock<Option<Arc<dyn CommitListener>>>,
) {
    while let Ok(group) = rx.recv() {
        let l = listener.read().ok().and_then(|l| l.clone());
        if let Some(l) = l {
            let mut writes: Vec<Committed<'_>> = group
                .changes
                .iter()
                .map(|c| Committed {
                    rtype: &c.rtype,
                    id: &c.id,
                    version: c.version,
                    resource: c.resource.as_deref(),
                    last_updated_ms: c.last_updated_ms,
                })
                .collect();
            writes.sort_by(|a, b| (a.rtype, a.id).cmp(&(b.rtype, b.id)));
            let applied =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| l.committed(&writes)));
            if applied.is_err() {
                tracing::error!(
                    "the commit listener panicked; derived state may be stale until re-evaluation"
                );
            }
        }
        metrics::histogram!("vbc_engine_update_lag_seconds")
            .record(group.durable_at.elapsed().as_secs_f64());
        let mut st = position.lock();
        st.1 = st.1.max(group.seq);
        position.moved.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Slow(AtomicU64);

    impl CommitListener for Slow {
        fn committed(&self, writes: &[Committed<'_>]) {
            std::thread::sleep(Duration::from_millis(30));
            self.0.fetch_add(writes.len() as u64, Ordering::SeqCst);
        }
    }

    fn change(id: &str) -> Change {
        Change {
            rtype: "Patient".into(),
            id: id.into(),
            version: 1,
            resource: Some(b"{}".to_vec()),
            last_updated_ms: 0,
        }
    }

    #[test]
    fn a_reader_that_settles_sees_every_group_published_before_it() {
        let feed = Feed::start(10).expect("feed");
        let seen = Arc::new(Slow(AtomicU64::new(0)));
        feed.set_listener(seen.clone());
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            feed.publish(11 + i as u64, vec![change(id), change(&format!("{id}2"))]);
        }
        // published, not yet applied: the listener is slow
        assert!(seen.0.load(Ordering::SeqCst) < 6);
        feed.position().settle();
        assert_eq!(seen.0.load(Ordering::SeqCst), 6);
        assert_eq!(feed.position().get(), (13, 13));
        feed.close();
        // after close nothing applies a group, so nobody waits for one
        feed.publish(14, vec![change("d")]);
        feed.position().settle();
        assert_eq!(feed.position().get(), (14, 14));
    }
}
