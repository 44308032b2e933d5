//! Building and running the master: bind, spawn the writer, publisher and ack consumer, serve
//! HTTP until the stop signal, then wind everything down in order.

use crate::ack_consumer::AckConsumer;
use crate::config::MasterConfig;
use crate::durability;
use crate::fence::{Evidence, Fence, Fenced};
use crate::http::{self, AppState};
use crate::publisher::{Publisher, PublisherSettings};
use crate::refill;
use crate::replication::{self, Replication};
use crate::write_request::WriteLimits;
use crate::writer::{DedupFlush, LogWriter};
use replog_common::wire::run::RunLimits;
use replog_shell::amqp::{self, Broker};
use replog_shell::shutdown::supervised;
use replog_shell::startup::{self, ServeLimits, StartError};
use replog_shell::store::{
    self, DataDir, LogStore, StoreError, TailCachedLog, DEFAULT_TAIL_BYTES, DEFAULT_TAIL_ENTRIES,
};
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A master that is bound and running its background tasks.
pub struct Application {
    /// The bound HTTP listener.
    listener: TcpListener,
    /// The HTTP routes and their state.
    router: axum::Router,
    /// How long a client may hold the HTTP server.
    limits: ServeLimits,
    /// Cancelled on SIGINT/SIGTERM or a fatal error.
    stop: CancellationToken,
    /// Background tasks to wait for at shutdown.
    tasks: TaskTracker,
    /// Holds the data directory's lock until the very end.
    _data_dir: Arc<DataDir>,
    /// The writer thread, joined last so every accepted write is stored.
    writer_thread: std::thread::JoinHandle<()>,
}

impl Application {
    /// Binds the listener and starts the writer, publisher and ack consumer.
    pub async fn build(
        config: MasterConfig,
        stop: CancellationToken,
    ) -> Result<Application, StartError> {
        let default_w = config
            .validate()
            .map_err(|e| StartError::Config(e.to_string()))?;
        let metrics = crate::metrics::install();
        let url = config.broker.amqp_url.clone();
        let topology = config.broker.topology();
        // Stamped on every entry as its AMQP user_id, which the broker validates.
        // Every URL of one broker cluster logs in as the same user: the first one names it.
        let broker_user = amqp::url_user(url.urls()[0].expose())?;
        let broker = Broker::new(url, format!("replog master ({})", topology.namespace()))?;
        tracing::info!(
            broker = %broker.url(),
            namespace = %topology.namespace(),
            secondaries = ?config.secondaries.iter().map(|spec| spec.id.as_str()).collect::<Vec<_>>(),
            broker_user = %broker_user,
            secondaries_authenticated = config.secondary_users().is_some(),
            default_w,
            queue_type = ?config.broker.queue_type,
            dedup = ?config.dedup,
            quorum = %config.quorum,
            suspect_after_ms = config.suspect_after_ms,
            unhealthy_after_ms = config.unhealthy_after_ms,
            "starting master"
        );

        let data_dir = config.data_dir.clone();
        let dedup_mode = config.dedup;
        let recovered = store::blocking(move || durability::recover(&data_dir, dedup_mode)).await?;
        let durability::Recovered {
            data_dir,
            store,
            mut dedup,
            confirmed: confirmed_at_start,
            confirmed_mark,
        } = recovered;
        let mut confirmed_at_start = confirmed_at_start;
        if let Some(source) = &config.refill_from {
            let refilled = refill::refill(store.clone(), source, config.refill_token())
                .await
                .map_err(|error| StartError::Node(Box::new(error)))?;
            let log = store.clone();
            let (indexed, caught_up) = store::blocking(move || {
                let caught_up = dedup.catch_up(&*log)?;
                Ok::<_, StoreError>((dedup, caught_up))
            })
            .await?;
            dedup = indexed;
            tracing::info!(
                from = %refilled.from,
                to = %refilled.to,
                indexed = caught_up.indexed,
                source = %source,
                "log refilled from a secondary; nothing renumbered"
            );
            confirmed_at_start = confirmed_mark.min(store.last_order());
        }
        let fence = Arc::new(Fence::new());
        if let Some(fenced) =
            Fenced::check(store.last_order(), confirmed_mark, Evidence::ConfirmedMark)
        {
            tracing::error!(
                log_end = %fenced.log_end,
                evidence_end = %fenced.evidence_end,
                "{fenced}"
            );
            fence.raise(fenced);
        }
        // From here on the newest entries are also kept in memory, so that the publisher sends
        // what the writer just stored without reading it back from the disk.
        let tail = Arc::new(TailCachedLog::new(
            store,
            DEFAULT_TAIL_ENTRIES,
            DEFAULT_TAIL_BYTES,
        ));
        let store: Arc<dyn LogStore> = tail.clone();
        let (stored_tx, stored_rx) = watch::channel(store.last_order());
        let (writer, writer_thread) = LogWriter::spawn(
            store.clone(),
            dedup,
            DedupFlush::default(),
            stored_tx,
            stop.clone(),
        );
        let incarnation = data_dir.incarnation();
        tracing::info!(%incarnation, "this master's data directory incarnation, stamped on every entry it publishes");
        let replication = Replication::new(
            config.secondary_ids(),
            config.health_policy(),
            config.quorum,
            Instant::now(),
            stop.clone(),
        );

        let tasks = TaskTracker::new();
        let (confirmed, confirmed_rx) = watch::channel(confirmed_at_start);
        // How far the confirmed mark on disk goes: a replicated write is answered only once
        // the mark covers it, so the mark is evidence of every acknowledged entry (the fence).
        let (mark_tx, mark_rx) = watch::channel(confirmed_mark.max(confirmed_at_start));
        let recovered_end = store.last_order();
        let settings = PublisherSettings {
            topology: topology.clone(),
            secondaries: config.secondary_ids(),
            queue_type: config.broker.queue_type,
            confirm_timeout: Duration::from_millis(config.confirm_timeout_ms),
            incarnation,
            runs: RunLimits {
                entries: config.run_entries as usize,
                bytes: config.run_bytes as usize,
            },
            publishes_in_flight: config.publishes_in_flight as usize,
            linger: Duration::from_millis(config.linger_ms),
            broker_user,
        };
        if config.linger_ms > 1000 {
            tracing::warn!(
                linger_ms = config.linger_ms,
                "--linger-ms is above 1000: entries nobody waits for reach the secondaries that \
                 late, and a secondary that sees no progress for 3 s fetches them from the \
                 master instead"
            );
        }
        let publisher = Publisher::new(
            broker.clone(),
            settings,
            tail,
            stored_rx,
            replication.awaited(),
            confirmed,
        );
        tasks.spawn(supervised(
            "publisher",
            stop.clone(),
            publisher.run(stop.clone()),
        ));
        tasks.spawn(supervised(
            "confirmed mark",
            stop.clone(),
            durability::keep_confirmed_mark(data_dir.clone(), confirmed_rx, mark_tx),
        ));
        let broker_connected = Arc::new(AtomicBool::new(false));
        let acks = AckConsumer {
            broker,
            topology,
            replication: replication.clone(),
            store: store.clone(),
            fence: fence.clone(),
            incarnation,
            connected: broker_connected.clone(),
            recovered_end,
            secondary_users: config.secondary_users().map(Arc::new),
        };
        tasks.spawn(supervised(
            "ack consumer",
            stop.clone(),
            acks.run(stop.clone()),
        ));
        tasks.spawn(supervised(
            "node states",
            stop.clone(),
            replication::watch_health(replication.clone(), config.health_tick(), stop.clone()),
        ));

        let state = AppState {
            writer,
            replication,
            store,
            limits: WriteLimits {
                max_w: config.max_w(),
                default_w,
                default_timeout: config.wc_timeout(),
            },
            max_body_bytes: config.max_body_bytes,
            fence,
            mark_written: mark_rx,
            broker_connected,
            metrics,
        };
        let listener = startup::bind(config.listen).await?;
        Ok(Application {
            listener,
            router: replog_shell::http::require_token(
                http::router(state),
                config.http.api_token.clone(),
            ),
            limits: config.http.limits(),
            stop,
            tasks,
            _data_dir: data_dir,
            writer_thread,
        })
    }

    /// The address the HTTP API is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Serves until the stop token is cancelled, then stops the HTTP server, drains the
    /// publisher and stops the writer.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = startup::serve_until_stopped(
            self.listener,
            self.router,
            self.limits,
            self.stop,
            self.tasks,
        )
        .await;
        // The router (and with it every handle to the writer) is gone: the writer thread ends
        // once it has stored what it took.
        let _ = tokio::task::spawn_blocking(move || self.writer_thread.join()).await;
        served
    }
}
