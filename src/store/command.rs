//! How the store sends a command: the operations it times (one
//! `cachalot_redis_command_duration_seconds` series each), the boxed command future, and
//! the clients' builder and pool size. Apart from `mod.rs` so the health logic there reads
//! without the metric plumbing.

use crate::policy::RedisSettings;
use crate::store::Unavailable;
use crate::store::connect;
use fred::prelude::*;
use std::pin::Pin;
use std::sync::OnceLock;

/// The Redis operations whose durations are measured, one
/// `cachalot_redis_command_duration_seconds` series each.
#[derive(Clone, Copy)]
pub(super) enum Op {
    Mget,
    GetPurgeMarks,
    Set,
    Put,
    AdmitVariant,
    Lock,
    Unlock,
    Publish,
    Ping,
    Zrangebyscore,
    Invalidate,
    Scan,
    MemoryUsage,
    Info,
}

impl Op {
    const COUNT: usize = Op::Info as usize + 1;

    /// The series' `command` label.
    fn label(self) -> &'static str {
        match self {
            Op::Mget => "mget",
            Op::GetPurgeMarks => "get_purge_marks",
            Op::Set => "set",
            Op::Put => "put",
            Op::AdmitVariant => "admit_variant",
            Op::Lock => "lock",
            Op::Unlock => "unlock",
            Op::Publish => "publish",
            Op::Ping => "ping",
            Op::Zrangebyscore => "zrangebyscore",
            Op::Invalidate => "invalidate",
            Op::Scan => "scan",
            Op::MemoryUsage => "memory_usage",
            Op::Info => "info",
        }
    }

    /// One command sent with the store's options, whose timeout then bounds it: the lookup
    /// (its `MGET`, batched or not). A second timer per hit would cost more than it guards.
    pub(super) fn one_timed_command(self) -> bool {
        matches!(self, Op::Mget)
    }
}

/// Each operation's duration histogram, registered on first use and kept: looking a
/// labelled series up in the registry on every command showed in profiles of the hit path.
#[derive(Default)]
pub(super) struct Timings([OnceLock<metrics::Histogram>; Op::COUNT]);

impl Timings {
    pub(super) fn of(&self, op: Op) -> &metrics::Histogram {
        self.0[op as usize].get_or_init(|| {
            metrics::histogram!("cachalot_redis_command_duration_seconds", "command" => op.label())
        })
    }
}

pub(super) fn builder(settings: &RedisSettings) -> Result<Builder, Unavailable> {
    connect::builder(settings).map_err(Unavailable)
}

/// A Redis command on its way. Boxed because fred's command futures are several KiB, and
/// every async layer they pass through (`run`, `exec`, the timeout, the lookup, the request)
/// would otherwise hold its own copy and move it: for a hit, that was most of a 22 KiB
/// request future copied into place on every request.
pub(super) type Command<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// Commands are pipelined on each connection; a few connections spread the parsing work.
pub(super) fn pool_size() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8)
}
