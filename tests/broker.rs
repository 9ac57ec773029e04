//! rdkafka (bundled librdkafka) against the real local broker: produce (idempotent), consume in
//! a consumer group with manual offset store, commit, and resume from the committed offset.

mod common;

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

fn group_consumer(brokers: &str, group: &str) -> StreamConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_consume_commit_resume() {
    let brokers = common::brokers();
    let topic = common::unique("roundtrip");
    common::create_topics(&brokers, &[(&topic, 1)]).await;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .expect("producer");
    for i in 0..100u32 {
        let payload = format!("m{i}");
        producer
            .send(
                FutureRecord::to(&topic).key("k").payload(&payload),
                Timeout::After(Duration::from_secs(10)),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("delivered");
    }

    let group = common::unique("group");
    {
        let c = group_consumer(&brokers, &group);
        c.subscribe(&[&topic]).expect("subscribe");
        for i in 0..40 {
            let m = tokio::time::timeout(Duration::from_secs(30), c.recv())
                .await
                .expect("message within 30 s")
                .expect("no consumer error");
            assert_eq!(m.payload(), Some(format!("m{i}").as_bytes()));
            assert_eq!(m.offset(), i64::from(i));
            c.store_offset_from_message(&m).expect("store");
        }
        c.commit_consumer_state(CommitMode::Sync).expect("commit");
    }
    // A new member of the same group resumes right after the last stored offset.
    let c = group_consumer(&brokers, &group);
    c.subscribe(&[&topic]).expect("subscribe");
    let m = tokio::time::timeout(Duration::from_secs(30), c.recv())
        .await
        .expect("message within 30 s")
        .expect("no consumer error");
    assert_eq!(m.offset(), 40, "resumed at the committed offset");
    assert_eq!(m.payload(), Some(&b"m40"[..]));
}
