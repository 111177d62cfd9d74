//! Tests of the audit log's selection on both backends: a time range (`[from, to)`), who and
//! what, combined with AND, paged newest first by cursor with the selection kept.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use super::audit::AuditRow;
use super::operator::{AuditSelection, Cursor, PageRequest};
use super::{Backend, Store};
use crate::model::{AuditAction, UnixMs};

/// The rows every test starts from: (at, actor, action), oldest first (ids 1 to 6).
const ROWS: [(i64, &str, AuditAction); 6] = [
    (1_000, "ops@x", AuditAction::SignIn),
    (2_000, "ops@x", AuditAction::ReplayDelivery),
    (3_000, "token:ci", AuditAction::ReplayDelivery),
    (4_000, "ops@x", AuditAction::DismissDeadLetter),
    (5_000, "ops@x", AuditAction::ReplayDelivery),
    (6_000, "token:ci", AuditAction::CreateApiToken),
];

#[tokio::test]
async fn sqlite() {
    let (_dir, store) = super::open_temp();
    let Backend::Sqlite(sqlite) = &store.backend else { unreachable!("a SQLite store") };
    sqlite
        .write(|c| {
            for (at, actor, action) in ROWS {
                AuditRow { at: UnixMs(at), actor, action, target: "t", count: 1, detail: None }.write(c)?;
            }
            Ok(())
        })
        .await
        .unwrap();
    selects_by_time_actor_and_action(store).await;
}

#[tokio::test]
async fn postgres() {
    let (server, store) = super::open_temp_postgres().await;
    let pool = super::postgres::connect(&server.url(), None, 1, Duration::ZERO).unwrap();
    let client = pool.get().await.unwrap();
    for (at, actor, action) in ROWS {
        client
            .execute(
                "INSERT INTO audit_log (at_ms, actor, action, target, count) VALUES ($1, $2, $3, 't', 1)",
                &[&UnixMs(at), &actor, &action],
            )
            .await
            .unwrap();
    }
    selects_by_time_actor_and_action(store).await;
}

async fn selects_by_time_actor_and_action(store: Store) {
    let ats = |selection: AuditSelection, page: PageRequest| {
        let store = store.clone();
        async move {
            let page = store.audit_page_matching(selection, page).await.unwrap();
            (page.rows.iter().map(|r| r.at.0).collect::<Vec<_>>(), page.has_more, page.rows.last().map(|r| r.cursor()))
        }
    };
    let all = PageRequest { after: None, limit: 10 };
    assert_eq!(ats(AuditSelection::default(), all).await.0, [6_000, 5_000, 4_000, 3_000, 2_000, 1_000]);
    // `from` is inclusive, `to` exclusive: [2 s, 5 s).
    let range = AuditSelection { from: Some(UnixMs(2_000)), to: Some(UnixMs(5_000)), ..Default::default() };
    assert_eq!(ats(range.clone(), all).await.0, [4_000, 3_000, 2_000]);
    assert_eq!(ats(AuditSelection { from: Some(UnixMs(5_001)), ..Default::default() }, all).await.0, [6_000]);
    assert_eq!(ats(AuditSelection { to: Some(UnixMs(1_000)), ..Default::default() }, all).await.0, Vec::<i64>::new());
    let by_ops = AuditSelection { actor: Some("ops@x".into()), ..Default::default() };
    assert_eq!(ats(by_ops, all).await.0, [5_000, 4_000, 2_000, 1_000]);
    let replays = AuditSelection { action: Some(AuditAction::ReplayDelivery), ..Default::default() };
    assert_eq!(ats(replays.clone(), all).await.0, [5_000, 3_000, 2_000]);
    let ci_replays = AuditSelection { actor: Some("token:ci".into()), ..replays.clone() };
    assert_eq!(ats(ci_replays, all).await.0, [3_000]);
    assert_eq!(ats(AuditSelection { actor: Some("ops".into()), ..Default::default() }, all).await.0, Vec::<i64>::new());

    // Paging keeps the selection: the replays in [2 s, 6 s), two at a time.
    let in_range = AuditSelection { to: Some(UnixMs(6_000)), from: Some(UnixMs(2_000)), ..replays };
    let (first, more, cursor) = ats(in_range.clone(), PageRequest { after: None, limit: 2 }).await;
    assert_eq!((first, more, cursor), (vec![5_000, 3_000], true, Some(Cursor(3))));
    let (second, more, _) = ats(in_range, PageRequest { after: cursor, limit: 2 }).await;
    assert_eq!((second, more), (vec![2_000], false));
    // And the whole log, as before.
    let (whole, more, _) = ats(range, PageRequest { after: Some(Cursor(4)), limit: 1 }).await;
    assert_eq!((whole, more), (vec![3_000], true));
    assert_eq!(store.audit_page(PageRequest { after: Some(Cursor(2)), limit: 5 }).await.unwrap().rows.len(), 1);
}
