//! The bare RabbitMQ pipeline of replog's shape, the yardstick replog is measured against: no
//! HTTP, no storage, one AMQP message per entry.
//!
//! - One confirmed publisher (one channel in confirm mode, at most `window` publishes awaiting
//!   their confirm) publishes persistent messages of the entry size to a durable fanout exchange
//!   bound to one durable queue per "secondary" (classic or quorum).
//! - One consumer per queue, each on a connection of its own (as a secondary is a process of its
//!   own), with the secondaries' prefetch. It takes whatever deliveries are ready, settles them
//!   with one `basic.ack(multiple=true)` and publishes one cumulative reply ("I have everything
//!   up to sequence number s") to a reply queue.
//! - The publisher side consumes the replies; a client's write is done when every consumer's
//!   reply covers it (the bare equivalent of `w = 1 + secondaries`).
//!
//! A message's first 16 bytes are its sequence number and its publish time (microseconds since
//! the run began), so each consumer measures its delivery lag. Every run declares its names under
//! a fresh `bench-raw-<uuid>` prefix and deletes them at the end, whatever happened.

use crate::args::{Pace, QueueKind, Stop, WSpec};
use crate::driver::{drive, Outcome, WriteFn};
use crate::stats::{micros, LagEntries, Latency};
use futures_util::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Mutex, Semaphore};
use tokio_util::sync::CancellationToken;

/// How often the entries-behind lag is sampled.
pub const LAG_SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// How long the warm-up write may take (queues of a fresh quorum group take a moment).
const WARM_UP_LIMIT: Duration = Duration::from_secs(30);

/// How long closing a channel or connection may take before it is abandoned.
const CLOSE_LIMIT: Duration = Duration::from_secs(5);

/// How long connecting may take.
const CONNECT_LIMIT: Duration = Duration::from_secs(10);

/// What the bare pipeline needs to know.
#[derive(Debug, Clone)]
pub struct RawSpec {
    /// The broker.
    pub amqp_url: String,
    /// The queues' type.
    pub queue_type: QueueKind,
    /// How many queues (and consumers).
    pub consumers: usize,
    /// Unconfirmed publishes allowed in flight.
    pub window: usize,
    /// Each consumer's prefetch.
    pub prefetch: u16,
    /// Message size in bytes (at least 16 are sent: the header).
    pub size: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Closed or open loop.
    pub pace: Pace,
    /// When to stop.
    pub stop: Stop,
}

/// One consumer's lag behind the publisher.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConsumerLag {
    /// `q1`, `q2`, ...
    pub name: String,
    /// Published but not yet delivered to this consumer, sampled every 100 ms.
    pub entries: LagEntries,
    /// From publish to delivery at this consumer.
    pub delivery: Latency,
}

/// What the bare pipeline measured.
#[derive(Debug)]
pub struct RawOutcome {
    /// Throughput and latency, as the clients saw them.
    pub outcome: Outcome,
    /// Each consumer's lag.
    pub lag: Vec<ConsumerLag>,
    /// Publishes the broker nacked or never confirmed.
    pub unconfirmed: u64,
    /// CPU time per answered write of the broker (when local) and the load generator (which
    /// runs the publisher and the consumers), over the load.
    pub cpu: Vec<crate::cpu::ProcessCpu>,
}

/// Why the bare pipeline could not run.
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    /// The broker refused or went away.
    #[error("broker: {0}")]
    Amqp(#[from] lapin::Error),
    /// The broker did not let us in in time.
    #[error("no AMQP connection within {0:?}")]
    Connect(Duration),
    /// The first write never completed.
    #[error("the warm-up write did not come back from every consumer within {0:?}: {1}")]
    WarmUp(Duration, String),
}

/// The broker names of one run.
struct Names {
    exchange: String,
    queues: Vec<String>,
    replies: String,
}

impl Names {
    fn new(consumers: usize) -> Names {
        let prefix = format!("bench-raw-{}", uuid::Uuid::new_v4().simple());
        Names {
            exchange: format!("{prefix}.entries"),
            queues: (1..=consumers).map(|i| format!("{prefix}.q{i}")).collect(),
            replies: format!("{prefix}.replies"),
        }
    }
}

/// Runs the bare pipeline once and deletes its names from the broker afterwards.
pub async fn run(spec: &RawSpec) -> Result<RawOutcome, RawError> {
    let names = Names::new(spec.consumers);
    let outcome = run_named(spec, &names).await;
    let mut queues = names.queues.clone();
    queues.push(names.replies.clone());
    if let Err(error) = replog_testkit::namespace::delete_queues_and_exchanges(
        &spec.amqp_url,
        &queues,
        std::slice::from_ref(&names.exchange),
    )
    .await
    {
        eprintln!("warning: could not delete the bare pipeline's queues: {error}");
    }
    outcome
}

/// The publisher side, shared by the clients.
struct Publisher {
    /// The channel in confirm mode, and the last sequence number published on it: locked
    /// together so that sequence numbers follow publish order (the replies are cumulative).
    channel: Mutex<(Channel, u64)>,
    /// Publishes awaiting their confirm.
    window: Arc<Semaphore>,
    exchange: String,
    /// The body after the 16-byte header.
    padding: Vec<u8>,
    /// The start of the run, for publish times.
    epoch: Instant,
    /// The highest sequence number every consumer has replied for.
    done: watch::Receiver<u64>,
    /// Publishes nacked or failed.
    unconfirmed: Arc<AtomicU64>,
}

impl Publisher {
    async fn write(self: Arc<Self>) -> Result<(), String> {
        let permit = self
            .window
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| "the window is closed".to_owned())?;
        let (seq, confirm) = {
            let mut guard = self.channel.lock().await;
            let seq = guard.1 + 1;
            let mut body = Vec::with_capacity(16 + self.padding.len());
            body.extend_from_slice(&seq.to_le_bytes());
            body.extend_from_slice(&micros(self.epoch.elapsed()).to_le_bytes());
            body.extend_from_slice(&self.padding);
            let confirm = guard
                .0
                .basic_publish(
                    self.exchange.as_str().into(),
                    "".into(),
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .map_err(|error| format!("publish: {error}"))?;
            guard.1 = seq;
            (seq, confirm)
        };
        let unconfirmed = self.unconfirmed.clone();
        tokio::spawn(async move {
            match confirm.await {
                Ok(confirmation) if confirmation.is_ack() => {}
                _ => {
                    unconfirmed.fetch_add(1, Ordering::Relaxed);
                }
            }
            drop(permit);
        });
        let mut done = self.done.clone();
        done.wait_for(|done| *done >= seq)
            .await
            .map(|_| ())
            .map_err(|_| "the reply listener stopped".to_owned())
    }
}

/// Connects (each consumer and the publisher separately).
async fn connect(amqp_url: &str) -> Result<Connection, RawError> {
    tokio::time::timeout(
        CONNECT_LIMIT,
        Connection::connect(amqp_url, ConnectionProperties::default()),
    )
    .await
    .map_err(|_| RawError::Connect(CONNECT_LIMIT))?
    .map_err(RawError::from)
}

async fn run_named(spec: &RawSpec, names: &Names) -> Result<RawOutcome, RawError> {
    let epoch = Instant::now();
    let publisher_connection = connect(&spec.amqp_url).await?;
    let channel = publisher_connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let durable = || QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            names.exchange.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    for queue in &names.queues {
        channel
            .queue_declare(
                queue.as_str().into(),
                durable(),
                queue_arguments(spec.queue_type),
            )
            .await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                names.exchange.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    channel
        .queue_declare(
            names.replies.as_str().into(),
            durable(),
            queue_arguments(QueueKind::Classic),
        )
        .await?;

    let stop = CancellationToken::new();
    // What each consumer has been delivered (the highest sequence number), for the lag sampler.
    let delivered: Arc<Vec<AtomicU64>> =
        Arc::new((0..spec.consumers).map(|_| AtomicU64::new(0)).collect());
    let mut consumer_connections = Vec::new();
    let mut consumer_tasks = Vec::new();
    for (index, queue) in names.queues.iter().enumerate() {
        let connection = connect(&spec.amqp_url).await?;
        let channel = connection.create_channel().await?;
        channel
            .basic_qos(spec.prefetch, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                format!("bench consumer {}", index + 1).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        consumer_tasks.push(tokio::spawn(consume(
            index,
            channel,
            consumer,
            names.replies.clone(),
            delivered.clone(),
            usize::from(spec.prefetch),
            epoch,
            stop.clone(),
        )));
        consumer_connections.push(connection);
    }

    // The reply listener: the slowest consumer's cumulative reply releases the clients.
    let (done_tx, done_rx) = watch::channel(0u64);
    let reply_channel = publisher_connection.create_channel().await?;
    let replies = reply_channel
        .basic_consume(
            names.replies.as_str().into(),
            "bench replies".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let listener = tokio::spawn(listen(replies, spec.consumers, done_tx, stop.clone()));

    let publisher = Arc::new(Publisher {
        channel: Mutex::new((channel, 0)),
        window: Arc::new(Semaphore::new(spec.window)),
        exchange: names.exchange.clone(),
        padding: vec![b'x'; spec.size.saturating_sub(16)],
        epoch,
        done: done_rx,
        unconfirmed: Arc::new(AtomicU64::new(0)),
    });
    match tokio::time::timeout(WARM_UP_LIMIT, publisher.clone().write()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return Err(RawError::WarmUp(WARM_UP_LIMIT, error)),
        Err(_) => return Err(RawError::WarmUp(WARM_UP_LIMIT, "timed out".into())),
    }

    let sampler = tokio::spawn(sample_lag(
        publisher.clone(),
        delivered.clone(),
        stop.clone(),
    ));
    let write: WriteFn = {
        let publisher = publisher.clone();
        Arc::new(move |_w| publisher.clone().write().boxed())
    };
    // The bare pipeline has no write concern: every write waits for every consumer.
    let cpu_before = crate::cpu::CpuReading::take(&crate::cpu::own_processes(&spec.amqp_url));
    let outcome = drive(write, spec.clients, &WSpec::Fixed(0), spec.pace, spec.stop).await;
    let cpu = cpu_before.since(outcome.latencies_us.len() as u64);

    stop.cancel();
    let lag_samples = sampler.await.unwrap_or_default();
    let mut lag = Vec::new();
    for (index, mut task) in consumer_tasks.into_iter().enumerate() {
        // A consumer stuck on a broker that stopped answering is given up on, not waited for.
        let mut delivery = match tokio::time::timeout(CLOSE_LIMIT * 2, &mut task).await {
            Ok(joined) => joined.unwrap_or_default(),
            Err(_) => {
                task.abort();
                eprintln!("consumer {} did not stop in time", index + 1);
                Vec::new()
            }
        };
        lag.push(ConsumerLag {
            name: format!("q{}", index + 1),
            entries: LagEntries::of(lag_samples.get(index).map_or(&[][..], Vec::as_slice)),
            delivery: Latency::of_micros(&mut delivery),
        });
    }
    let _ = listener.await;
    // Let the last confirms come in before counting the unconfirmed ones.
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        publisher.window.acquire_many(spec.window as u32),
    )
    .await;
    let unconfirmed = publisher.unconfirmed.load(Ordering::Relaxed);
    // A close the broker never answers must not hold the whole benchmark up.
    for connection in consumer_connections.iter().chain([&publisher_connection]) {
        let _ = tokio::time::timeout(CLOSE_LIMIT, connection.close(200, "bench done".into())).await;
    }
    Ok(RawOutcome {
        outcome,
        lag,
        unconfirmed,
        cpu,
    })
}

/// `x-queue-type`, as replog's nodes declare it.
fn queue_arguments(kind: QueueKind) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString(kind.name().into()),
    );
    arguments
}

/// One consumer: takes every delivery that is ready (up to the prefetch), settles them with one
/// `multiple=true` ack, replies once with the highest sequence number. Returns its delivery
/// lags in microseconds.
#[allow(clippy::too_many_arguments)]
async fn consume(
    index: usize,
    channel: Channel,
    mut consumer: lapin::Consumer,
    replies: String,
    delivered: Arc<Vec<AtomicU64>>,
    batch_limit: usize,
    epoch: Instant,
    stop: CancellationToken,
) -> Vec<u64> {
    let mut lags = Vec::new();
    let mut record = |data: &[u8]| -> u64 {
        let header = |at: usize| {
            data.get(at..at + 8)
                .and_then(|bytes| bytes.try_into().ok())
                .map_or(0, u64::from_le_bytes)
        };
        let (seq, sent) = (header(0), header(8));
        lags.push(micros(epoch.elapsed()).saturating_sub(sent));
        seq
    };
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => break,
            next = consumer.next() => match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(error)) => {
                    eprintln!("consumer {}: {error}", index + 1);
                    break;
                }
                None => break,
            },
        };
        let mut highest = record(&first.data);
        let mut last = first;
        let mut taken = 1;
        while taken < batch_limit {
            match consumer.next().now_or_never() {
                Some(Some(Ok(delivery))) => {
                    highest = highest.max(record(&delivery.data));
                    last = delivery;
                    taken += 1;
                }
                _ => break,
            }
        }
        delivered[index].fetch_max(highest, Ordering::Relaxed);
        let acked = last.acker.ack(BasicAckOptions { multiple: true }).await;
        let mut reply = Vec::with_capacity(16);
        reply.extend_from_slice(&(index as u64).to_le_bytes());
        reply.extend_from_slice(&highest.to_le_bytes());
        let replied = channel
            .basic_publish(
                "".into(),
                replies.as_str().into(),
                BasicPublishOptions::default(),
                &reply,
                BasicProperties::default(),
            )
            .await;
        if let Some(error) = acked
            .err()
            .map(|e| e.to_string())
            .or(replied.err().map(|e| e.to_string()))
        {
            eprintln!("consumer {}: {error}", index + 1);
            break;
        }
    }
    // Closed here rather than by the last handle's drop, so that the connection's close does
    // not race a channel close still in flight.
    let _ = tokio::time::timeout(CLOSE_LIMIT, channel.close(200, "bench done".into())).await;
    lags
}

/// Reads the cumulative replies and publishes the slowest consumer's position.
async fn listen(
    mut replies: lapin::Consumer,
    consumers: usize,
    done: watch::Sender<u64>,
    stop: CancellationToken,
) {
    let mut positions = vec![0u64; consumers];
    loop {
        let reply = tokio::select! {
            _ = stop.cancelled() => return,
            next = replies.next() => match next {
                Some(Ok(reply)) => reply,
                _ => return,
            },
        };
        let word = |at: usize| {
            reply
                .data
                .get(at..at + 8)
                .and_then(|bytes| bytes.try_into().ok())
                .map(u64::from_le_bytes)
        };
        if let (Some(index), Some(highest)) = (word(0), word(8)) {
            if let Some(position) = positions.get_mut(index as usize) {
                *position = (*position).max(highest);
            }
            let slowest = positions.iter().copied().min().unwrap_or(0);
            done.send_if_modified(|done| {
                let moved = slowest > *done;
                *done = (*done).max(slowest);
                moved
            });
        }
    }
}

/// Every 100 ms: published minus delivered, per consumer.
async fn sample_lag(
    publisher: Arc<Publisher>,
    delivered: Arc<Vec<AtomicU64>>,
    stop: CancellationToken,
) -> Vec<Vec<u64>> {
    let mut samples = vec![Vec::new(); delivered.len()];
    let mut tick = tokio::time::interval(LAG_SAMPLE_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return samples,
            _ = tick.tick() => {}
        }
        let published = publisher.channel.lock().await.1;
        for (index, position) in delivered.iter().enumerate() {
            samples[index].push(published.saturating_sub(position.load(Ordering::Relaxed)));
        }
    }
}
