//! "No accepted invocation is lost": a hook whose database write fails still
//! answers, its record is spooled, and the spool is replayed once the
//! database is back.

use sqlx::{AssertSqlSafe, Connection, PgConnection};

use crate::helpers::{fixture, spawn_app_with};
use crate::support::db::{Backend, admin_url};

pub(crate) async fn set_database_available(db_url: &str, available: bool) {
    let name = url::Url::parse(db_url)
        .unwrap()
        .path()
        .trim_start_matches('/')
        .to_owned();
    let mut admin = PgConnection::connect(&admin_url()).await.unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS {available}"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    if !available {
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(&name)
            .execute(&mut admin)
            .await
            .unwrap();
    }
}

/// The server drops every connection to the database (which stays up), and
/// then they sit idle past the store's 1 s ping threshold (`PING_IF_IDLE_FOR`).
async fn drop_connections_then_idle(db_url: &str) {
    set_database_available(db_url, false).await;
    set_database_available(db_url, true).await;
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
}

fn spooled_lines(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
        .map(|e| {
            std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .count()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_spools_hooks_and_replays_them_when_it_is_back() {
    let app = spawn_app_with(Backend::Postgres, |_| {}).await;
    let hook = fixture("hooks/cachexia-full.json");
    assert_eq!(app.post_hook("cachexia-risk", &hook).await.status(), 200);
    assert_eq!(app.db.count("invocations").await, 1);

    set_database_available(app.db.url(), false).await;
    let resp = app.post_hook("cachexia-risk", &hook).await;
    assert_eq!(resp.status(), 200, "the hook still answers");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["cards"].as_array().unwrap().len(), 1);
    assert_eq!(
        spooled_lines(app.spool_dir.path()),
        1,
        "the record is in the spool"
    );

    set_database_available(app.db.url(), true).await;
    let dir = app.spool_dir.path().to_owned();
    app.wait_for("the spool to be replayed", || {
        let dir = dir.clone();
        async move { spooled_lines(&dir) == 0 }
    })
    .await;
    assert_eq!(app.db.count("invocations").await, 2);
    assert_eq!(app.db.count("cards").await, 2);
    app.cleanup().await;
}

/// The pool does not ping a connection on every acquire (sqlx already pings
/// it when it goes back), only one that sat idle for a second or more
/// (`PgStore::options`): a connection the server dropped meanwhile is then
/// replaced instead of failing the next query.
#[tokio::test]
async fn connections_dropped_while_idle_are_replaced_before_reuse() {
    let db = crate::support::db::TestDb::postgres().await;
    let store = db.connect_again().await;
    store.ping().await.unwrap();

    drop_connections_then_idle(db.url()).await;

    store
        .ping()
        .await
        .expect("the dead idle connection is replaced, not used");
    store.close().await;
    db.cleanup().await;
}

/// Hook records go through their own connections, outside the pool
/// (`WriteConnections`), with the same rule: one idle for a second or more
/// is pinged before reuse, so a connection the server dropped meanwhile is
/// replaced and the next hook is stored, not spooled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_connection_dropped_while_idle_is_replaced_before_the_next_hook() {
    let app = spawn_app_with(Backend::Postgres, |_| {}).await;
    let hook = fixture("hooks/cachexia-full.json");
    assert_eq!(app.post_hook("cachexia-risk", &hook).await.status(), 200);

    drop_connections_then_idle(app.db.url()).await;

    assert_eq!(app.post_hook("cachexia-risk", &hook).await.status(), 200);
    assert_eq!(
        spooled_lines(app.spool_dir.path()),
        0,
        "stored, not spooled"
    );
    assert_eq!(app.db.count("invocations").await, 2);
    app.cleanup().await;
}
