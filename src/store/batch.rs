//! Lookup batching: the hit path's reads from Redis, sent together when they arrive together.
//!
//! Every cache lookup reads two keys (the generation and the entry). Sent one command at a
//! time, each costs a write to Redis's socket (on loopback the sender's syscall also does
//! Redis's receive work), a wakeup of the client's connection task, a read and a write in
//! Redis's event loop, and a wakeup of the waiting request: under load those costs, not
//! the lookups, are most of a hit. Lookups that queue up while the batcher waits for its
//! turn on the scheduler go out as one `MGET` of all their keys instead, each key once: one
//! write, one command for Redis, and a hot key's entry read once for every request that
//! wants it at that moment (each gets a reference to the same bytes). A read shared that way
//! is as current as one of its own: every request in the batch was waiting when it was sent.
//!
//! Nothing waits on a timer. A lookup that arrives while no other is on its way is sent at
//! once by its own request, as before batching: on a quiet proxy a hop through the batcher
//! would only add task wakeups to every miss. The others queue, and are sent on the
//! batcher's next turn, which comes as soon as the tasks already ready to run have had
//! theirs: the batch is whatever those tasks asked for meanwhile. Each batch is sent from its own task, so several
//! can be in flight at once and a request that gives up (its client hung up) never cancels
//! the others' lookups. In a Redis Cluster one `MGET` may only name keys of one hash slot;
//! there a batch is one `MGET` per slot (a key's generation and entry share a slot).

use bytes::Bytes;
use fred::clients::{Client, WithOptions};
use fred::prelude::{ClientLike, Error, ErrorKind, KeysInterface, Options, Pool};
use fred::util::redis_keyslot;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

/// What one lookup gets back: the values of its keys, in order.
type Reply = Result<Vec<Option<Bytes>>, Error>;

/// Most lookups in one `MGET`: bounds one reply's size (a batch of large entries for
/// different keys) and how long the first lookup in it waits for the last byte.
const MAX_BATCH: usize = 64;

/// A lookup waiting to be sent.
struct Pending {
    keys: Vec<String>,
    reply: oneshot::Sender<Reply>,
}

struct Queue {
    waiting: Mutex<Vec<Pending>>,
    /// Rung by the lookup that finds the queue empty; later ones join its batch.
    ring: Notify,
}

/// Sends lookups in batches over a pool's connections.
pub struct Batcher {
    queue: Arc<Queue>,
    task: JoinHandle<()>,
    pool: Pool,
    options: Options,
    /// Whether a lookup is being sent on its own (at most one is).
    alone: AtomicBool,
}

impl Batcher {
    /// Starts the batcher; every command is sent with `options`.
    pub fn new(pool: Pool, options: Options) -> Self {
        let queue = Arc::new(Queue {
            waiting: Mutex::new(Vec::new()),
            ring: Notify::new(),
        });
        let task = tokio::spawn(run(Arc::clone(&queue), pool.clone(), options.clone()));
        Self {
            queue,
            task,
            pool,
            options,
            alone: AtomicBool::new(false),
        }
    }

    /// The values of `keys`: read at once if no other lookup is on its way, else in the
    /// next batch.
    pub async fn mget(&self, keys: Vec<String>) -> Reply {
        if let Some(_alone) = Alone::claim(&self.alone) {
            let client = self.pool.next().with_options(&self.options);
            return client.mget(keys).await;
        }
        let (reply, answer) = oneshot::channel();
        let first = {
            let mut waiting = self.queue.waiting.lock().expect("batch queue poisoned");
            waiting.push(Pending { keys, reply });
            waiting.len() == 1
        };
        if first {
            self.queue.ring.notify_one();
        }
        answer
            .await
            .unwrap_or_else(|_| Err(Error::new(ErrorKind::Canceled, "lookup batch dropped")))
    }
}

/// The one lookup sent on its own; the next may be once this is dropped (also when the
/// request gives up half way).
struct Alone<'a>(&'a AtomicBool);

impl<'a> Alone<'a> {
    fn claim(flag: &'a AtomicBool) -> Option<Self> {
        flag.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| Self(flag))
    }
}

impl Drop for Alone<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Takes what has queued up each time the queue is rung, and sends it.
async fn run(queue: Arc<Queue>, pool: Pool, options: Options) {
    loop {
        queue.ring.notified().await;
        // The tasks that are ready now (other connections with a request parsed) run
        // first and queue their lookups into this batch.
        tokio::task::yield_now().await;
        let waiting = std::mem::take(&mut *queue.waiting.lock().expect("batch queue poisoned"));
        let client = pool.next().with_options(&options);
        let groups = if client.is_clustered() {
            by_slot(waiting)
        } else {
            vec![waiting]
        };
        for group in groups {
            let mut group = group.into_iter().peekable();
            while group.peek().is_some() {
                let batch: Vec<Pending> = group.by_ref().take(MAX_BATCH).collect();
                tokio::spawn(send(client.clone(), batch));
            }
        }
    }
}

/// Lookups grouped by the hash slot of their first key.
fn by_slot(waiting: Vec<Pending>) -> Vec<Vec<Pending>> {
    let mut groups: HashMap<u16, Vec<Pending>> = HashMap::new();
    for pending in waiting {
        let slot = pending
            .keys
            .first()
            .map_or(0, |key| redis_keyslot(key.as_bytes()));
        groups.entry(slot).or_default().push(pending);
    }
    groups.into_values().collect()
}

/// Reads every key of the batch once, with one `MGET`, and answers each lookup.
async fn send(client: WithOptions<Client>, batch: Vec<Pending>) {
    let mut keys: Vec<String> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut lookups = Vec::with_capacity(batch.len());
    for Pending {
        keys: wanted,
        reply,
    } in batch
    {
        let positions: Vec<usize> = wanted
            .into_iter()
            .map(|key| {
                *index.entry(key).or_insert_with_key(|key| {
                    keys.push(key.clone());
                    keys.len() - 1
                })
            })
            .collect();
        lookups.push((positions, reply));
    }
    let count = keys.len();
    let values = match client.mget::<Vec<Option<Bytes>>, _>(keys).await {
        Ok(values) if values.len() == count => Ok(values),
        Ok(_) => Err(Error::new(
            ErrorKind::Protocol,
            "MGET answered a different number of values",
        )),
        Err(e) => Err(e),
    };
    for (positions, reply) in lookups {
        let answer = match &values {
            Ok(values) => Ok(positions.iter().map(|&i| values[i].clone()).collect()),
            Err(e) => Err(e.clone()),
        };
        let _ = reply.send(answer);
    }
}
