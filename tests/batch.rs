//! Lookup batching (`cachalot::store::batch`) against a real Redis: a lookup with none other on its
//! way goes alone, lookups queued behind it go out together as one `MGET`, and each gets its
//! own keys' values; a Redis that is gone fails every lookup of the batch at once; in a
//! Cluster, a batch is one `MGET` per hash slot.
//!
//! The lookups are queued from one task on a current-thread runtime, so all of them are
//! queued before the batcher's turn comes: the batch they form does not depend on timing.

mod support;

use bytes::Bytes;
use cachalot::store::batch::Batcher;
use fred::prelude::{Builder, ClientLike, Config, Options, Pool};
use std::time::Duration;
use support::cluster::Cluster;
use support::redis::RedisServer;

async fn pool(url: &str) -> Pool {
    let config = Config::from_url(url).expect("a valid URL");
    let pool = Builder::from_config(config).build_pool(2).expect("a pool");
    pool.init().await.expect("redis answers");
    pool
}

fn keys(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn values(values: &[Option<&str>]) -> Vec<Option<Bytes>> {
    values
        .iter()
        .map(|v| v.map(|v| Bytes::copy_from_slice(v.as_bytes())))
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn lookups_queued_behind_one_are_one_mget_and_each_gets_its_own_values() {
    let redis = RedisServer::start();
    redis.command(&["SET", "a", "1"]).unwrap();
    redis.command(&["SET", "b", "2"]).unwrap();
    let batcher = Batcher::new(pool(&redis.url()).await, Options::default());
    let before = redis.command_calls("mget");

    let (first, second, hot, missing) = tokio::join!(
        batcher.mget(keys(&["a", "b"])),
        batcher.mget(keys(&["b", "a"])),
        batcher.mget(keys(&["a", "a"])),
        batcher.mget(keys(&["nothing", "b"])),
    );
    assert_eq!(first.unwrap(), values(&[Some("1"), Some("2")]));
    assert_eq!(second.unwrap(), values(&[Some("2"), Some("1")]));
    assert_eq!(hot.unwrap(), values(&[Some("1"), Some("1")]));
    assert_eq!(missing.unwrap(), values(&[None, Some("2")]));
    // The first lookup found none on its way and went alone; the three queued behind it
    // went together.
    assert_eq!(
        redis.command_calls("mget") - before,
        2,
        "one alone, one for the batch"
    );

    // A lookup alone is sent too, and sees what changed since.
    redis.command(&["SET", "a", "3"]).unwrap();
    let alone = batcher.mget(keys(&["a"])).await.unwrap();
    assert_eq!(alone, values(&[Some("3")]));
}

#[tokio::test(flavor = "current_thread")]
async fn a_batch_on_a_redis_that_is_gone_answers_every_lookup_in_it_with_the_error() {
    let mut redis = RedisServer::start();
    let options = Options {
        max_attempts: Some(1),
        timeout: Some(Duration::from_millis(300)),
        ..Options::default()
    };
    let batcher = Batcher::new(pool(&redis.url()).await, options);
    redis.kill();

    let (one, two) = tokio::join!(
        batcher.mget(keys(&["a", "b"])),
        batcher.mget(keys(&["c", "d"]))
    );
    assert!(one.is_err(), "{one:?}");
    assert!(two.is_err(), "{two:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn in_a_cluster_a_batch_is_one_mget_per_hash_slot() {
    let cluster = Cluster::start(3, 0);
    // Hash tags pin each pair to one slot; the three tags land on different primaries.
    let pairs = [("{x}1", "{x}2"), ("{y}1", "{y}2"), ("{z}1", "{z}2")];
    let batcher = Batcher::new(pool(&cluster.url()).await, Options::default());
    let client = pool(&cluster.url()).await;
    for (i, (first, second)) in pairs.iter().enumerate() {
        let _: () = fred::interfaces::KeysInterface::set(
            client.next(),
            *first,
            format!("{i}-first"),
            None,
            None,
            false,
        )
        .await
        .unwrap();
        let _: () = fred::interfaces::KeysInterface::set(
            client.next(),
            *second,
            format!("{i}-second"),
            None,
            None,
            false,
        )
        .await
        .unwrap();
    }

    let (x, y, z) = tokio::join!(
        batcher.mget(keys(&[pairs[0].0, pairs[0].1])),
        batcher.mget(keys(&[pairs[1].1, pairs[1].0])),
        batcher.mget(keys(&[pairs[2].0, "{z}missing"])),
    );
    assert_eq!(x.unwrap(), values(&[Some("0-first"), Some("0-second")]));
    assert_eq!(y.unwrap(), values(&[Some("1-second"), Some("1-first")]));
    assert_eq!(z.unwrap(), values(&[Some("2-first"), None]));
    client.quit().await.unwrap();
}
