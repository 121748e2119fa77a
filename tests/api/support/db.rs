//! Throwaway databases: every test gets its own.
//!
//! PostgreSQL: a database named `oncohooks_test_<uuid>` on the server of
//! `ONCOHOOKS_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`),
//! migrated, dropped by `cleanup()` or, if the test panicked first, on drop.
//! If the server is unreachable the test fails (CI starts PostgreSQL; a
//! silently skipped backend would hide regressions).
//!
//! SQLite: a file in a temporary folder.

use oncohooks::store::{Store, StoreOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use std::time::Duration;
use uuid::Uuid;

pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestDb {
    pub store: Store,
    pub backend: Backend,
    url: String,
    pg: Option<PgDatabase>,
    _dir: Option<tempfile::TempDir>,
}

struct PgDatabase {
    admin_url: String,
    name: String,
    dropped: bool,
}

pub fn admin_url() -> String {
    std::env::var("ONCOHOOKS_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_string())
}

/// The URL without its password, for messages.
fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "<unparseable URL>".to_string(),
    }
}

fn with_database(url: &str, name: &str) -> String {
    let mut u = url::Url::parse(url).expect("ONCOHOOKS_TEST_PG_URL is not a URL");
    u.set_path(&format!("/{name}"));
    u.to_string()
}

async fn admin_connection(admin_url: &str) -> PgConnection {
    match PgConnection::connect(admin_url).await {
        Ok(c) => c,
        Err(e) => panic!(
            "PostgreSQL is unreachable at {} ({e}). The postgres variant of the store tests needs it: \
             start it (`pg_ctlcluster --skip-systemctl-redirect <version> main start`) or set \
             ONCOHOOKS_TEST_PG_URL to a server where this user may CREATE DATABASE.",
            redacted(admin_url)
        ),
    }
}

async fn drop_database(admin_url: &str, name: &str) -> Result<(), sqlx::Error> {
    let mut conn = PgConnection::connect(admin_url).await?;
    // FORCE (PostgreSQL 13+) ends sessions still connected to it.
    sqlx::query(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(&mut conn)
    .await?;
    conn.close().await
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => TestDb::sqlite().await,
            Backend::Postgres => TestDb::postgres().await,
        }
    }

    pub fn options() -> StoreOptions {
        StoreOptions {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            ..StoreOptions::default()
        }
    }

    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("creating a temporary folder");
        // A folder that does not exist yet: connect must create it.
        let url = format!("sqlite://{}/data/audit.db", dir.path().display());
        let store = Store::connect_with(&url, &Self::options())
            .await
            .expect("opening the SQLite test database");
        store
            .migrate()
            .await
            .expect("migrating the SQLite test database");
        TestDb {
            store,
            backend: Backend::Sqlite,
            url,
            pg: None,
            _dir: Some(dir),
        }
    }

    pub async fn postgres() -> TestDb {
        let admin_url = admin_url();
        let name = format!("oncohooks_test_{}", Uuid::new_v4().simple());
        let mut admin = admin_connection(&admin_url).await;
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("creating test database {name}: {e}"));
        let _ = admin.close().await;
        let url = with_database(&admin_url, &name);
        let store = Store::connect_with(&url, &Self::options())
            .await
            .expect("connecting to the PostgreSQL test database");
        store
            .migrate()
            .await
            .expect("migrating the PostgreSQL test database");
        TestDb {
            store,
            backend: Backend::Postgres,
            url,
            pg: Some(PgDatabase {
                admin_url,
                name,
                dropped: false,
            }),
            _dir: None,
        }
    }

    /// The URL of this database (with credentials: keep it out of output).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A second, independent store on the same database.
    pub async fn connect_again(&self) -> Store {
        Store::connect_with(&self.url, &Self::options())
            .await
            .expect("connecting again")
    }

    /// Makes this database unusable for `self.store` the way an outage
    /// would: PostgreSQL drops the database under the open pool; SQLite
    /// closes the pool.
    pub async fn sabotage(&mut self) {
        match &mut self.pg {
            Some(pg) => {
                drop_database(&pg.admin_url, &pg.name)
                    .await
                    .expect("dropping the test database");
                pg.dropped = true;
            }
            None => self.store.close().await,
        }
    }

    /// Closes the pool and drops the database.
    pub async fn cleanup(mut self) {
        self.store.close().await;
        if let Some(pg) = &mut self.pg
            && !pg.dropped
        {
            drop_database(&pg.admin_url, &pg.name)
                .await
                .unwrap_or_else(|e| panic!("dropping test database {}: {e}", pg.name));
            pg.dropped = true;
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Reached without cleanup() when a test panicked: drop the database
        // from a thread of its own (a runtime cannot block inside itself).
        if let Some(pg) = &self.pg
            && !pg.dropped
        {
            let (admin_url, name) = (pg.admin_url.clone(), pg.name.clone());
            let done = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("building a runtime to drop the test database");
                rt.block_on(drop_database(&admin_url, &name))
            })
            .join();
            if !matches!(done, Ok(Ok(()))) {
                eprintln!("warning: could not drop a PostgreSQL test database");
            }
        }
    }
}

/// Runs async test bodies against SQLite and against PostgreSQL:
/// `both_backends!(story)` next to `async fn story(db: &mut TestDb)` makes
/// the tests `story::sqlite` and `story::postgres`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use $crate::support::db::{Backend, TestDb};

                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sqlite() {
                    let mut db = TestDb::new(Backend::Sqlite).await;
                    super::$name(&mut db).await;
                    db.cleanup().await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    let mut db = TestDb::new(Backend::Postgres).await;
                    super::$name(&mut db).await;
                    db.cleanup().await;
                }
            }
        )*
    };
}

impl TestDb {
    /// Rows in `table` (a fixed table name from the test itself).
    pub async fn count(&self, table: &'static str) -> i64 {
        let count = || async {
            let sql = AssertSqlSafe(format!("SELECT count(*) FROM {table}"));
            match &self.store {
                Store::Postgres(s) => sqlx::query_scalar(sql).fetch_one(s.pool()).await,
                Store::Sqlite(s) => sqlx::query_scalar(sql).fetch_one(s.pool()).await,
            }
        };
        // Once more after an error: a test that had the server drop this
        // pool's connections (`set_database_available`) leaves them in the
        // pool, and one idle for less than a second is reused without a ping
        // (`PgStore::options`); the failed query closes it.
        match count().await {
            Ok(n) => n,
            Err(_) => count()
                .await
                .unwrap_or_else(|e| panic!("counting rows of {table}: {e}")),
        }
    }
}

/// An error and all its causes, for asserting on the database's message.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
