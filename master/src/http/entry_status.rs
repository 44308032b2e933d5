//! `GET /messages/{message_id}`: where an entry stands and which nodes hold it, so that a client
//! whose write timed out (504) or whose answer was lost learns its fate without sending the
//! content again.

use super::{ApiError, AppState};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use replog_common::wire::http::EntryStatus;
use replog_common::{Entry, MessageId, NodeId, Order};
use replog_shell::http::HttpError;

/// The node name the master goes by in `held_by`.
pub const MASTER: &str = "master";

/// `GET /messages/{message_id}`: `200` with the entry and its holders, `404` when the log holds
/// no entry with that id.
pub async fn entry_status(
    State(app): State<AppState>,
    message_id: Result<Path<String>, PathRejection>,
) -> Result<Json<EntryStatus>, ApiError> {
    let Path(raw) = message_id.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let message_id = MessageId::parse(&raw).ok_or_else(|| {
        ApiError::bad_request(format!(
            "a message_id is 1 to {} bytes, got {} bytes",
            MessageId::MAX_LEN,
            raw.len()
        ))
    })?;
    let entry =
        app.writer.find(message_id).await?.ok_or_else(|| {
            HttpError::ResourceNotFound(format!("no entry with message_id {raw:?}"))
        })?;
    Ok(Json(status_of(&entry, app.replication.positions())))
}

/// The entry's status: held by the master (it is in its log) and by every secondary whose
/// acknowledged position covers its order.
fn status_of(entry: &Entry, positions: Vec<(NodeId, Order)>) -> EntryStatus {
    let held_by: Vec<String> = std::iter::once(MASTER.to_owned())
        .chain(
            positions
                .into_iter()
                .filter(|(_, acked)| *acked >= entry.order)
                .map(|(id, _)| id.as_str().to_owned()),
        )
        .collect();
    EntryStatus {
        message_id: entry.message_id.as_str().to_owned(),
        order: entry.order.get(),
        content: entry.content.clone(),
        acks: held_by.len() as u64,
        held_by,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_are_the_master_and_every_secondary_that_acked_the_order() {
        let entry = Entry {
            order: Order(5),
            message_id: MessageId::parse("m").unwrap(),
            content: "x".into(),
        };
        let id = |raw: &str| NodeId::parse(raw).unwrap();
        let status = status_of(
            &entry,
            vec![
                (id("s1"), Order(5)),
                (id("s2"), Order(4)),
                (id("s3"), Order(9)),
            ],
        );
        assert_eq!(status.held_by, vec!["master", "s1", "s3"]);
        assert_eq!(status.acks, 3);
        assert_eq!(status.order, 5);
        let alone = status_of(&entry, vec![]);
        assert_eq!((alone.held_by, alone.acks), (vec![MASTER.to_owned()], 1));
    }
}
