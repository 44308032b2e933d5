//! Catch-up: fetching from the master what this secondary's queue cannot provide.
//!
//! Two cases: at start (the node may have joined late, or lost its state, while its queue only
//! holds what was published since), the secondary pages through the master's log from its own
//! position once; afterwards, a gap in the hold-back buffer that stays open for `after` is
//! fetched, and so is a tail the master holds when nothing was applied for a while. When to
//! fetch is [`GapWatch`]'s decision; this task samples the applier's [`Backlog`], passes the
//! time in and does the HTTP. Fetched entries go through the applier like deliveries, so
//! whatever the queue also delivers is dropped as a duplicate.
//!
//! Every call to the master also tells what this secondary knows of it ([`MasterView`]):
//! whether it answered, and how far its log goes (from `/health`, or at least as far as the
//! pages it served). `/health` shows the first, `/ready` compares the second with the applied
//! position.

use crate::incoming::{Incoming, Source};
use replog_common::rules::apply::Backlog;
use replog_common::rules::gap_watch::{Decision, GapWatch};
use replog_common::wire::MessagesPage;
use replog_common::{Entry, Order};
use replog_shell::amqp::Backoff;
use replog_shell::http::ApiToken;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Entries asked for in one request. The master may send fewer (it bounds a page by bytes
/// too), so only an empty page says its log ends there.
const PAGE: u64 = 1000;

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("master unreachable: {0}")]
    Http(#[from] reqwest::Error),
    #[error("master answered {0}")]
    Status(reqwest::StatusCode),
    #[error("master's /health has no last_order")]
    Health,
    #[error("master sent a bad entry: {0}")]
    Wire(#[from] replog_common::wire::WireError),
}

/// The master as this secondary's last calls saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MasterView {
    /// Whether the last call got an answer (of any status); `None` before the first call.
    pub reachable: Option<bool>,
    /// The end of the master's log as last learned: from its `/health`, or from an empty page;
    /// a page with entries only shows the log goes at least that far (the master may end a
    /// page early to bound its bytes). `None` until something was learned.
    pub last_order: Option<Order>,
}

/// The catch-up task.
pub struct CatchUp {
    /// The master's base URL.
    master_url: String,
    /// HTTP client with a timeout.
    client: reqwest::Client,
    /// The applier's hold-back buffer, where the applied position and the gap are read from.
    backlog: watch::Receiver<Backlog>,
    /// Where fetched entries go.
    inbox: mpsc::Sender<Incoming>,
    /// How long a gap may stay open before it is fetched.
    after: Duration,
    /// `--delay-ms`: fetched entries are delayed like delivered ones.
    delay: Duration,
    /// What the calls to the master showed, for `/health` and `/ready`.
    view: watch::Sender<MasterView>,
}

impl CatchUp {
    /// A catch-up task against `master_url`, presenting `token` (the master's `--api-token`)
    /// when given.
    pub fn new(
        master_url: String,
        backlog: watch::Receiver<Backlog>,
        inbox: mpsc::Sender<Incoming>,
        after: Duration,
        delay: Duration,
        token: Option<ApiToken>,
    ) -> CatchUp {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let mut bearer =
                reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                    .expect("a validated token is a valid header value");
            bearer.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, bearer);
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .default_headers(headers)
            .build()
            .expect("HTTP client builds");
        CatchUp {
            master_url: master_url.trim_end_matches('/').to_owned(),
            client,
            backlog,
            inbox,
            after,
            delay,
            view: watch::Sender::new(MasterView::default()),
        }
    }

    /// Follows what the calls to the master show.
    pub fn master_view(&self) -> watch::Receiver<MasterView> {
        self.view.subscribe()
    }

    /// Records whether a call reached the master.
    fn reached<T>(&self, sent: Result<T, reqwest::Error>) -> Result<T, reqwest::Error> {
        let reachable = sent.is_ok();
        self.view.send_if_modified(|view| {
            let changed = view.reachable != Some(reachable);
            view.reachable = Some(reachable);
            changed
        });
        sent
    }

    /// Records what was learned of the master's log end: exactly `end`, or at least `end`.
    fn learned_end(&self, end: Order, exact: bool) {
        self.view.send_if_modified(|view| {
            let known = if exact {
                end
            } else {
                view.last_order.map_or(end, |known| known.max(end))
            };
            let changed = view.last_order != Some(known);
            view.last_order = Some(known);
            changed
        });
    }

    fn applied(&self) -> Order {
        self.backlog.borrow().applied
    }

    /// Runs until `stop`.
    pub async fn run(self, subscribed: CancellationToken, stop: CancellationToken) {
        // Entries published before the queue exists reach no queue: only once the consumer has
        // declared and bound it does "everything up to the master's end" cover the whole gap.
        tokio::select! {
            _ = subscribed.cancelled() => {}
            _ = stop.cancelled() => return,
        }
        tokio::select! {
            _ = self.initial_catch_up() => {}
            _ = stop.cancelled() => return,
        }
        let mut gap_watch = GapWatch::new(self.after, self.applied(), now());
        let mut ticker = tokio::time::interval(gap_watch.poll_interval());
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.cancelled() => return,
            }
            let Backlog {
                applied,
                gap,
                diverged,
                ..
            } = *self.backlog.borrow();
            match gap_watch.observe(applied, gap, now()) {
                Decision::Wait => {}
                // A diverged node applies nothing: fetching would only load the master. It
                // still looks at the master now and then, for `/health`.
                Decision::FetchRange { .. } if diverged => {}
                Decision::AskMasterEnd if diverged => {
                    tokio::select! {
                        _ = self.master_last_order() => {}
                        _ = stop.cancelled() => return,
                    }
                    gap_watch.stuck_check_done(applied, now());
                }
                Decision::FetchRange { first, last } => {
                    tracing::info!(%first, %last, "gap did not close from the queue; fetching it from the master");
                    tokio::select! {
                        fetched = self.fetch_range(first, last) => if let Err(error) = fetched {
                            tracing::warn!(%error, "catch-up fetch failed; will retry");
                        },
                        _ = stop.cancelled() => return,
                    }
                }
                Decision::AskMasterEnd => {
                    tokio::select! {
                        _ = self.check_not_stuck(&gap_watch, applied) => {}
                        _ = stop.cancelled() => return,
                    }
                    gap_watch.stuck_check_done(self.applied(), now());
                }
            }
        }
    }

    /// The safety net for a tail the queue lost (say, the queue was deleted and declared again
    /// while entries were published): nothing was applied for a while, so ask the master how
    /// far its log goes and fetch the difference.
    async fn check_not_stuck(&self, gap_watch: &GapWatch, applied: Order) {
        match self.master_last_order().await {
            Ok(end) => {
                if let Decision::FetchRange { first, last } = gap_watch.master_end(end, applied) {
                    tracing::info!(applied = %applied, master = %end, "nothing arrived while the master is ahead; fetching from the master");
                    if let Err(error) = self.fetch_range(first, last).await {
                        tracing::warn!(%error, "catch-up fetch failed; will retry");
                    }
                }
            }
            Err(error) => tracing::debug!(%error, "cannot ask the master how far its log goes"),
        }
    }

    async fn master_last_order(&self) -> Result<Order, FetchError> {
        let sent = self
            .client
            .get(format!("{}/health", self.master_url))
            .send()
            .await;
        let response = self.reached(sent)?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status()));
        }
        let health: serde_json::Value = response.json().await?;
        let end = health["last_order"]
            .as_u64()
            .map(Order)
            .ok_or(FetchError::Health)?;
        self.learned_end(end, true);
        Ok(end)
    }

    /// Pages through the master's log from this node's position until a page comes back empty.
    async fn initial_catch_up(&self) {
        let mut backoff = Backoff::new();
        let mut from = self.applied().next();
        let mut fetched = 0usize;
        loop {
            match self.fetch_page(from, PAGE).await {
                Ok(page) => {
                    let Some(last) = page.last() else {
                        break;
                    };
                    from = last.order.next();
                    fetched += page.len();
                    self.hand_over(page).await;
                }
                Err(error) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(%error, ?delay, "cannot reach the master for catch-up; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
        tracing::info!(fetched, "start-up catch-up from the master done");
    }

    async fn fetch_range(&self, first: Order, last: Order) -> Result<(), FetchError> {
        let mut from = first;
        while from <= last {
            let page = self
                .fetch_page(from, (last.get() - from.get() + 1).min(PAGE))
                .await?;
            let Some(end) = page.last().map(|entry| entry.order) else {
                break;
            };
            tracing::info!(first = %from, last = %end, "fetched missing entries from the master");
            from = end.next();
            self.hand_over(page).await;
        }
        Ok(())
    }

    /// Fetches one page from `from`, counting it by outcome.
    async fn fetch_page(&self, from: Order, limit: u64) -> Result<Vec<Entry>, FetchError> {
        let fetched = self.request_page(from, limit).await;
        let outcome = if fetched.is_ok() { "ok" } else { "error" };
        metrics::counter!(crate::metrics::CATCHUP_FETCHES_TOTAL, "outcome" => outcome).increment(1);
        fetched
    }

    async fn request_page(&self, from: Order, limit: u64) -> Result<Vec<Entry>, FetchError> {
        let url = format!("{}/messages?from={}&limit={}", self.master_url, from, limit);
        let sent = self.client.get(&url).send().await;
        let response = self.reached(sent)?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status()));
        }
        let page: MessagesPage = response.json().await?;
        let entries = page
            .messages
            .into_iter()
            .map(Entry::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        // An empty page ends where the master's log ended; any other shows it goes that far.
        let end = entries
            .last()
            .map_or(Order(from.get() - 1), |entry| entry.order);
        self.learned_end(end, entries.is_empty());
        Ok(entries)
    }

    /// Hands a fetched page to the applier. The page arrived at once, so `--delay-ms` delays
    /// it once, as a whole; then the entries go in with back-pressure, so a long catch-up never
    /// piles up in memory.
    async fn hand_over(&self, entries: Vec<Entry>) {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        for entry in entries {
            let incoming = Incoming {
                entries: vec![entry],
                source: Source::Master,
            };
            if self.inbox.send(incoming).await.is_err() {
                return;
            }
        }
    }
}

/// The time passed to the gap watch; tokio's clock, so a test that pauses time pauses it too.
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}
