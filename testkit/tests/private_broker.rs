//! The private broker against a real RabbitMQ installation: it starts on ports of its own,
//! answers AMQP, comes back after a stop and after SIGKILL on the same data, and leaves the
//! machine's shared broker alone.

use replog_testkit::broker::amqp_answers;
use replog_testkit::{BrokerOptions, PrivateBroker};
use std::time::Instant;

/// The machine's shared broker, which must keep answering whatever we do.
const SHARED_PORT: u16 = 5672;

#[tokio::test]
async fn a_private_broker_starts_stops_restarts_and_survives_sigkill() {
    let shared_before = amqp_answers(SHARED_PORT).is_ok();
    let began = Instant::now();
    let mut broker = PrivateBroker::start_new(BrokerOptions::default())
        .await
        .expect("the private broker starts");
    let first_start = broker.last_start_duration();
    assert_ne!(broker.port(), SHARED_PORT);
    assert!(broker.answers(), "AMQP answers after the first start");
    assert!(broker.amqp_url().contains(&broker.port().to_string()));

    broker.stop().await.expect("rabbitmqctl stop");
    assert!(!broker.is_running());
    assert!(!broker.answers(), "nothing answers once stopped");

    broker
        .start()
        .await
        .expect("a second start on the same data");
    assert!(broker.answers(), "AMQP answers after the restart");
    let second_start = broker.last_start_duration();

    broker.freeze().unwrap();
    assert!(broker.is_frozen());
    broker.thaw().unwrap();

    broker.kill().await.expect("SIGKILL");
    assert!(!broker.is_running());
    broker.start().await.expect("a start after SIGKILL");
    assert!(broker.answers(), "AMQP answers after a crash and a start");
    let dir = broker.dir().to_path_buf();
    drop(broker);
    assert!(!dir.exists(), "the broker's directory is removed on drop");

    eprintln!(
        "private broker: first start {first_start:?}, restart {second_start:?}, whole test {:?}",
        began.elapsed()
    );
    if shared_before {
        assert!(
            amqp_answers(SHARED_PORT).is_ok(),
            "the shared broker on {SHARED_PORT} must be untouched"
        );
    }
}
