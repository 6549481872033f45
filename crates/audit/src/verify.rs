//! Recomputes the chain and checks every head. Reports the first sequence number at which the
//! trail stops being what the writer wrote: a changed, missing, inserted or reordered event, a
//! head whose MAC does not verify (a chain rebuilt without the audit key), or events after the
//! last authenticated head.
//!
//! Streams both tables in sequence order, so memory stays flat however long the trail.

use futures_util::TryStreamExt;
use serde::Serialize;
use sqlx::PgPool;

use clinicd_crypto::Keyring;

use crate::chain;
use crate::checkpoint::Checkpoint;
use crate::error::AuditError;
use crate::event::StoredEvent;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub events_checked: i64,
    pub heads_checked: i64,
    pub last_seq: i64,
    /// `None`: the trail is intact.
    pub first_broken_seq: Option<i64>,
    pub problem: Option<String>,
}

#[derive(sqlx::FromRow)]
struct HeadRow {
    seq: i64,
    hash: Vec<u8>,
    key_version: i32,
    mac: Vec<u8>,
}

pub async fn verify(db: &PgPool, keyring: &Keyring) -> Result<VerifyReport, AuditError> {
    verify_with(db, keyring, None).await
}

/// [`verify`], and the chain must still hold `checkpoint`'s event with the same hash (a trail
/// emptied or cut short behind the triggers is otherwise a valid, shorter chain).
pub async fn verify_with(
    db: &PgPool,
    keyring: &Keyring,
    checkpoint: Option<Checkpoint>,
) -> Result<VerifyReport, AuditError> {
    // Partitions archived past retention: the retained chain starts after the last of them.
    let boundary = sqlx::query!(
        "SELECT last_seq, last_hash FROM audit_archives ORDER BY last_seq DESC LIMIT 1"
    )
    .fetch_optional(db)
    .await?
    .map(|row| (row.last_seq, row.last_hash));
    let (archived_up_to, start_hash) = boundary.unwrap_or_else(|| (0, chain::GENESIS.to_vec()));
    let mut report = VerifyReport {
        events_checked: 0,
        heads_checked: 0,
        last_seq: archived_up_to,
        first_broken_seq: None,
        problem: None,
    };
    // Keys first: with both streams open, a connection-starved pool could not fetch them.
    let versions: Vec<i32> = sqlx::query_scalar!("SELECT DISTINCT key_version FROM audit_heads")
        .fetch_all(db)
        .await?;
    let mut keys = std::collections::HashMap::new();
    for version in versions {
        let key = keyring
            .audit_chain_key_at(u32::try_from(version).unwrap_or(0))
            .await?;
        keys.insert(version, key);
    }
    let mut heads = sqlx::query_as!(
        HeadRow,
        "SELECT seq, hash, key_version, mac FROM audit_heads WHERE seq > $1 ORDER BY seq",
        archived_up_to
    )
    .fetch(db);
    let mut next_head = heads.try_next().await?;
    let mut events =
        sqlx::query_as!(StoredEvent, "SELECT * FROM audit_events ORDER BY seq").fetch(db);
    let mut prev = start_hash;
    let mut expected = archived_up_to + 1;
    let mut last_authenticated = archived_up_to;
    while let Some(event) = events.try_next().await? {
        report.events_checked += 1;
        report.last_seq = event.seq;
        let broken = if event.seq != expected {
            Some(format!("expected sequence {expected}, found {}", event.seq))
        } else if event.prev_hash != prev {
            Some("the link to the previous event does not match".to_owned())
        } else if chain::link(&prev, &event) != event.hash {
            Some("the event does not match its hash".to_owned())
        } else {
            None
        };
        if let Some(problem) = broken {
            return Ok(broken_at(report, expected.min(event.seq), problem));
        }
        // Heads for earlier sequence numbers than this event cannot sit on any event.
        if let Some(head) = next_head.as_ref().filter(|h| h.seq < event.seq) {
            let seq = head.seq;
            return Ok(broken_at(
                report,
                seq,
                format!("a head at {seq} has no event"),
            ));
        }
        if let Some(head) = next_head.take_if(|h| h.seq == event.seq) {
            report.heads_checked += 1;
            let authentic = keys
                .get(&head.key_version)
                .is_some_and(|key| chain::head_mac_valid(key, head.seq, &head.hash, &head.mac));
            if head.hash != event.hash || !authentic {
                let from = last_authenticated + 1;
                return Ok(broken_at(
                    report,
                    from,
                    format!(
                        "the head at {} is not authentic: the chain was rebuilt",
                        head.seq
                    ),
                ));
            }
            last_authenticated = head.seq;
            next_head = heads.try_next().await?;
        }
        if let Some(cp) = checkpoint
            .as_ref()
            .filter(|cp| cp.seq == event.seq && cp.hash != hex::encode(&event.hash))
        {
            let seq = cp.seq;
            return Ok(broken_at(
                report,
                seq,
                format!("the event at {seq} differs from the checkpoint: the trail was rewritten"),
            ));
        }
        prev = event.hash;
        expected += 1;
    }
    if let Some(head) = next_head {
        let seq = head.seq;
        return Ok(broken_at(
            report,
            seq.min(expected),
            format!("events up to {seq} are missing"),
        ));
    }
    if let Some(cp) = &checkpoint {
        let authentic = keyring
            .audit_chain_key_at(cp.key_version)
            .await
            .is_ok_and(|key| cp.authentic(&key));
        if !authentic {
            let seq = cp.seq;
            return Ok(broken_at(
                report,
                seq,
                format!("the checkpoint at {seq} is not authentic"),
            ));
        }
        if report.last_seq < cp.seq {
            let (from, to) = (report.last_seq + 1, cp.seq);
            return Ok(broken_at(
                report,
                from,
                format!("events {from} to {to} were checkpointed but are gone"),
            ));
        }
    }
    if last_authenticated != report.last_seq {
        let from = last_authenticated + 1;
        return Ok(broken_at(
            report,
            from,
            "events after the last authenticated head".to_owned(),
        ));
    }
    Ok(report)
}

fn broken_at(mut report: VerifyReport, seq: i64, problem: String) -> VerifyReport {
    tracing::warn!(seq, problem = %problem, "audit trail verification failed");
    report.first_broken_seq = Some(seq);
    report.problem = Some(problem);
    report
}
