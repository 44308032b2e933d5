//! Building and running a secondary, and stopping it in the right order: stop consuming, let
//! the applier store and settle what it holds, confirm the last ack, then close.

use crate::ack_publisher::Reporter;
use crate::applier::{Applier, Liveness};
use crate::catchup::CatchUp;
use crate::config::SecondaryConfig;
use crate::consumer::{self, Connected, ConsumerSettings};
use crate::http::{self, AppState};
use replog_common::events;
use replog_common::rules::apply::ApplyEngine;
use replog_shell::amqp::{self, Broker};
use replog_shell::shutdown::supervised;
use replog_shell::startup::{self, ServeLimits, StartError};
use replog_shell::store::{self, DataDir, LogStore, StoreError};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Entries waiting for the applier; bounds memory while the consumer outpaces the store.
const INBOX_CAPACITY: usize = 4096;

/// A secondary that is bound and running its background tasks.
pub struct Application {
    /// The bound HTTP listener.
    listener: TcpListener,
    /// Routes and state.
    router: axum::Router,
    /// How long a client may hold the HTTP server.
    limits: ServeLimits,
    /// Cancelled on SIGINT/SIGTERM or a fatal error.
    stop: CancellationToken,
    /// Background tasks to wait for at shutdown.
    tasks: TaskTracker,
    /// Holds the data directory's lock until the very end.
    _data_dir: DataDir,
}

impl Application {
    /// Binds the listener and starts the consumer, applier, catch-up and ack publisher.
    pub async fn build(
        config: SecondaryConfig,
        stop: CancellationToken,
    ) -> Result<Application, StartError> {
        let metrics = crate::metrics::install();
        let url = config.broker.amqp_url.clone();
        let topology = config.broker.topology();
        // Stamped on every report as its AMQP user_id, which the broker validates.
        // Every URL of one broker cluster logs in as the same user: the first one names it.
        let broker_user = amqp::url_user(url.urls()[0].expose())?;
        // Two connections: when the broker blocks publishing connections (a resource alarm),
        // the one that consumes and acks deliveries must keep flowing so queues can drain.
        let name = format!("replog secondary {} ({})", config.id, topology.namespace());
        let consume_broker = Broker::new(url.clone(), format!("{name} entries"))?;
        let ack_broker = Broker::new(url, format!("{name} acks"))?;

        let path = config.data_dir();
        let (data_dir, log, recovery) = store::blocking(move || {
            let data_dir = DataDir::open(&path)?;
            let (log, recovery) = data_dir.open_log()?;
            Ok::<_, StoreError>((data_dir, log, recovery))
        })
        .await?;
        tracing::info!(
            data_dir = %data_dir.path().display(),
            entries = recovery.records,
            segments = recovery.segments,
            torn_tail_cut = recovery.cut.is_some(),
            "log recovered; applying continues after the last stored entry"
        );
        let store: Arc<dyn LogStore> = Arc::new(log);
        let applied_at_start = store.last_order();
        tracing::info!(
            id = %config.id,
            broker = %consume_broker.url(),
            namespace = %topology.namespace(),
            master = %config.master_url,
            event = events::RECOVERED,
            last = applied_at_start.get(),
            delay_ms = config.delay_ms,
            fail_rate = config.fail_rate,
            queue_type = ?config.broker.queue_type,
            incarnation = %data_dir.incarnation(),
            heartbeat_ms = config.heartbeat_ms,
            broker_user = %broker_user,
            master_user = config.master_user.as_deref().unwrap_or("(any: trusted broker)"),
            "starting secondary"
        );
        let engine = ApplyEngine::new(applied_at_start);
        let (backlog_tx, backlog_rx) = watch::channel(engine.backlog());
        let (applied_tx, applied_rx) = watch::channel(applied_at_start);
        let (inbox_tx, inbox_rx) = mpsc::channel(INBOX_CAPACITY);
        let applier_done = CancellationToken::new();
        let tasks = TaskTracker::new();

        let (alive_tx, alive_rx) = watch::channel(Instant::now());
        let (master_incarnation_tx, master_incarnation_rx) = watch::channel(None);
        let (role_tx, role_rx) = watch::channel(false);
        let applier = Applier::new(
            store.clone(),
            engine,
            backlog_tx,
            applied_tx,
            config.fail_rate,
            stop.clone(),
        )
        .with_liveness(Liveness {
            alive: alive_tx,
            master_incarnation: master_incarnation_tx,
            wake_every: config.heartbeat(),
        });
        let diverged = applier.divergence();
        let done = applier_done.clone();
        let guard = stop.clone();
        tasks.spawn(async move {
            supervised("applier", guard, applier.run(inbox_rx)).await;
            done.cancel();
        });
        let settings = ConsumerSettings {
            topology: topology.clone(),
            id: config.id.clone(),
            queue_type: config.broker.queue_type,
            prefetch: config.prefetch,
            delay: config.delay(),
            connected: Connected::default(),
            master_user: config.master_user.clone(),
        };
        let connected = settings.connected.clone();
        let subscribed = CancellationToken::new();
        tasks.spawn(supervised(
            "consumer",
            stop.clone(),
            consumer::run(
                consume_broker,
                settings,
                inbox_tx.clone(),
                subscribed.clone(),
                role_tx,
                stop.clone(),
                applier_done.clone(),
            ),
        ));
        let catch_up = CatchUp::new(
            config.master_url.clone(),
            backlog_rx.clone(),
            inbox_tx,
            Duration::from_millis(config.catchup_after_ms),
            config.delay(),
            config.master_token().cloned(),
        );
        let master_view = catch_up.master_view();
        tasks.spawn(supervised(
            "catch-up",
            stop.clone(),
            catch_up.run(subscribed, stop.clone()),
        ));
        let reporter = Reporter {
            broker: ack_broker,
            topology,
            id: config.id.clone(),
            incarnation: data_dir.incarnation(),
            applied: applied_rx.clone(),
            master_incarnation: master_incarnation_rx,
            alive: alive_rx,
            role: role_rx,
            heartbeat: config.heartbeat(),
            user: broker_user,
        };
        tasks.spawn(supervised(
            "ack publisher",
            stop.clone(),
            reporter.run(applier_done),
        ));

        let state = AppState {
            id: config.id,
            store,
            backlog: backlog_rx,
            applied: applied_rx,
            incarnation: data_dir.incarnation(),
            connected,
            master: master_view,
            diverged,
            prefetch: config.prefetch,
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
        })
    }

    /// The address the HTTP API is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Serves until stopped, then waits for the background tasks to wind down.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        startup::serve_until_stopped(
            self.listener,
            self.router,
            self.limits,
            self.stop,
            self.tasks,
        )
        .await
    }
}
