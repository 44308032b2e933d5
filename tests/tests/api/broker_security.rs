//! Who may say what on the broker: every node logs in as a least-privileged user of its own,
//! created by `scripts/broker-users`; the master believes a report only from the secondary's
//! user (`--secondaries ID=USER`) and the secondaries an entry only from the master's
//! (`--master-user`). One private RabbitMQ node for the whole file (its users and permissions
//! are its own, the shared broker's stay untouched), one cluster, the scenarios in turn.

use crate::helpers::{
    acked_by, assert_created, assert_timed_out, master_health, messages, post, wait_until, write,
    DEADLINE,
};
use replog_common::wire::{AckMessage, EntryMessage};
use replog_common::{Incarnation, NodeId};
use replog_testkit::{
    declare_plain_queue, publish_as, unique_namespace, BrokerOptions, PrivateBroker, TestCluster,
    WriteOutcome,
};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Each role's password on the private broker.
const PASSWORDS: [(&str, &str); 3] = [("MASTER", "pw-m"), ("S1", "pw-1"), ("S2", "pw-2")];

/// Runs `scripts/broker-users NAMESPACE` against the private broker, on its default vhost (the
/// one the guest URL of the namespace guard reaches).
async fn create_users(broker: &PrivateBroker, namespace: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/broker-users");
    let (rabbitmqctl, environment) = broker.rabbitmqctl_command();
    let mut command = tokio::process::Command::new(script);
    command
        .arg(namespace)
        .envs(environment)
        .env("RABBITMQCTL", rabbitmqctl)
        .env("REPLOG_VHOST", "/")
        .env("REPLOG_SECONDARIES", "s1,s2");
    for (role, password) in PASSWORDS {
        command.env(format!("REPLOG_BROKER_PASSWORD_{role}"), password);
    }
    let output = command.output().await.expect("scripts/broker-users runs");
    assert!(
        output.status.success(),
        "scripts/broker-users failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A report of `applied` for secondary `id`, as any publisher could write it.
fn report(id: &str, applied: u64) -> Vec<u8> {
    AckMessage {
        id: NodeId::parse(id).expect("a valid id"),
        incarnation: Incarnation::random(),
        applied,
        sent_at_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as u64,
        master_incarnation: None,
    }
    .encode()
}

/// Whether `error` is the broker refusing with `code` (e.g. `ACCESS_REFUSED`).
fn refused(outcome: &Result<(), String>, code: &str) -> bool {
    matches!(outcome, Err(error) if error.contains(code))
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_right_broker_users_can_ack_or_publish_entries() {
    let broker = PrivateBroker::start_new(BrokerOptions::default())
        .await
        .unwrap_or_else(|error| panic!("cannot start a private RabbitMQ node: {error}"));
    let ns = unique_namespace("test");
    create_users(&broker, &ns).await;
    let url_of =
        |role: &str, password: &str| broker.amqp_url_as(&format!("{ns}-{role}"), password, "/");
    let (master_url, s1_url, s2_url) = (
        url_of("master", "pw-m"),
        url_of("s1", "pw-1"),
        url_of("s2", "pw-2"),
    );
    let master_user = format!("{ns}-master");
    let users = format!("s1={ns}-s1,s2={ns}-s2");
    // The guest URL is the namespace guard's (and the forger's): guest may do anything on "/".
    let guest_url = broker.amqp_url();
    let mut cluster = TestCluster::builder()
        .namespace(&ns)
        .amqp_url(&guest_url)
        .fast_heartbeats()
        .master_args(&["--amqp-url", &master_url, "--secondaries", &users])
        .secondary_args("s1", &["--amqp-url", &s1_url])
        .secondary_args("s2", &["--amqp-url", &s2_url])
        .every_secondary_args(&["--master-user", &master_user])
        .start()
        .await;
    let master = cluster.master();

    // Least-privileged users are enough to replicate, and their reports count.
    assert_created(&post(&master, &write("one", 3)).await, "one", 3);

    // A secondary's user may not publish entries, nor reach a queue through the default
    // exchange (another secondary's, say).
    let entries = format!("{ns}.entries");
    let forged = EntryMessage {
        message_id: "forged-2".into(),
        order: 2,
        content: "forged".into(),
        master_incarnation: None,
    };
    let forged = serde_json::to_vec(&forged).unwrap();
    let as_s1 = publish_as(&s1_url, &entries, "", &forged, None).await;
    assert!(refused(&as_s1, "ACCESS_REFUSED"), "{as_s1:?}");
    let s2_queue = format!("{ns}.secondary.s2");
    let around = publish_as(&s1_url, "", &s2_queue, &forged, None).await;
    assert!(refused(&around, "ACCESS_REFUSED"), "{around:?}");
    // Nobody can publish in the master's name: the broker checks user_id.
    let posing = publish_as(&guest_url, &entries, "", &forged, Some(&master_user)).await;
    assert!(refused(&posing, "PRECONDITION_FAILED"), "{posing:?}");

    // A forged entry at the next order, published by a user that may (guest), reaches both
    // queues before the master's real one, and is rejected: the real one is applied.
    publish_as(&guest_url, &entries, "", &forged, None)
        .await
        .expect("guest may publish to the entries exchange");
    assert_created(&post(&master, &write("two", 3)).await, "two", 3);
    for id in ["s1", "s2"] {
        let log = messages(&cluster.secondary(id)).await;
        let contents: Vec<&str> = log.iter().map(|entry| entry.content.as_str()).collect();
        assert_eq!(contents, ["one", "two"], "{id}: {log:?}");
        let text = cluster.secondary_node(id).log_text();
        assert!(
            text.contains("not published by the master's broker user"),
            "{id} did not say it rejected the forged entry"
        );
    }

    // s2 goes; a w=3 write waits for it. Forged reports for s2, claiming the write's order and
    // far beyond, do not release it; one claiming to be s2's user is refused by the broker.
    cluster.kill("s2").await;
    let client = master.clone();
    let mut waiting = write("three", 3);
    waiting.timeout_ms = Some(4000);
    let pending = tokio::spawn(async move { post(&client, &waiting).await });
    wait_until(DEADLINE, "the w=3 write is in the master's log", || async {
        master_health(&master).await.last_order == 3
    })
    .await;
    let acks_in = format!("{ns}.acks-in");
    let acks = format!("{ns}.acks");
    for applied in [3, 1_000_000_000] {
        publish_as(&guest_url, &acks_in, "", &report("s2", applied), None)
            .await
            .expect("guest may publish to the acks exchange");
        publish_as(&guest_url, "", &acks, &report("s2", applied), None)
            .await
            .expect("guest may publish to the acks queue");
    }
    let posing = publish_as(
        &guest_url,
        &acks_in,
        "",
        &report("s2", 3),
        Some(&format!("{ns}-s2")),
    )
    .await;
    assert!(refused(&posing, "PRECONDITION_FAILED"), "{posing:?}");
    let answer = pending.await.expect("the write task");
    assert!(
        !matches!(answer, WriteOutcome::Created(_)),
        "forged reports released a w=3 write s2 does not hold: {answer:?}"
    );
    let timed_out = assert_timed_out(&answer);
    assert_eq!((timed_out.order, timed_out.acks), (3, 2), "{timed_out:?}");
    let health = master_health(&master).await;
    assert!(
        acked_by(&health).contains(&("s2".to_owned(), 2)),
        "{health:?}"
    );
    assert!(
        cluster
            .master_node()
            .log_text()
            .contains("ignoring a report for s2"),
        "the master did not say it ignored the forged reports"
    );
}

/// An acks queue left by an older replog (unbounded, so declaring it bounded fails with
/// `PRECONDITION_FAILED`) is replaced by the master, and reports flow again.
#[tokio::test(flavor = "multi_thread")]
async fn an_unbounded_acks_queue_of_an_older_replog_is_replaced() {
    let ns = unique_namespace("test");
    let url = replog_testkit::amqp_url_from_env();
    declare_plain_queue(&url, &format!("{ns}.acks"))
        .await
        .expect("the old acks queue is declared");
    let cluster = TestCluster::builder().namespace(&ns).start().await;
    assert_created(&post(&cluster.master(), &write("one", 3)).await, "one", 3);
    assert!(
        cluster
            .master_node()
            .log_text()
            .contains("the acks queue exists with other arguments"),
        "the master did not replace the old acks queue"
    );
}
