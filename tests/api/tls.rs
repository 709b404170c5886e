//! PostgreSQL over TLS: a PostgreSQL of the test's own, started with `ssl=on` and a
//! certificate the test makes with openssl: one from a CA the test makes, or a self-signed
//! X.509 v1 certificate (what `CREATE EXTENSION citus` makes). The expected answers are
//! libpq's `sslmode` semantics (PostgreSQL docs, "SSL Mode Descriptions"): `disable` never
//! encrypts; `prefer` encrypts when the server can and otherwise talks plain text; `require`
//! encrypts without checking the certificate; `verify-ca` also checks that the certificate
//! chains to `sslrootcert`; `verify-full` also checks the host name. A refused certificate
//! stops `migrate` at once with a startup error that says so.

use crate::helpers::free_port;
use dispute_service::{
    config::{DatabaseConfig, Secret},
    startup,
};
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

/// A throwaway PostgreSQL cluster (initdb + pg_ctl from this machine's binaries).
struct Cluster {
    bindir: PathBuf,
    data: PathBuf,
    port: u16,
}

/// Runs a PostgreSQL tool, as the `postgres` user when we are root (PostgreSQL refuses root).
fn as_postgres(program: &Path) -> Command {
    if current_uid() == 0 {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn current_uid() -> u32 {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn run(command: &mut Command) -> Output {
    let out = command.output().expect("running a command");
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The directory of `initdb`/`pg_ctl`, as `scripts/with-db` finds it.
fn bindir() -> PathBuf {
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let candidates = from_pg_config.into_iter().chain(
        std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("bin")),
    );
    candidates
        .filter(|dir| dir.join("initdb").exists())
        .max()
        .expect("the TLS test needs PostgreSQL's binaries (initdb, pg_ctl), as scripts/test does")
}

/// In `dir`: a CA (`ca`) and a certificate it signed for `localhost` / 127.0.0.1
/// (`server`, X.509 v3), another CA that signed nothing (`other-ca`), and self-signed X.509
/// v1 certificates for `localhost` (no extensions at all): `v1` with an RSA key, as citus
/// makes, and `v1-ec` with a P-256 key.
fn certificates(dir: &Path) {
    let openssl = |args: &[&str]| run(Command::new("openssl").current_dir(dir).args(args));
    for ca in ["ca", "other-ca"] {
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=test {ca}"),
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.crt"),
        ]);
    }
    for (name, key) in [
        ("server", "ec_paramgen_curve:prime256v1"),
        ("v1", "rsa_keygen_bits:2048"),
        ("v1-ec", "ec_paramgen_curve:prime256v1"),
    ] {
        let algorithm = key.split('_').next().unwrap();
        openssl(&[
            "req",
            "-new",
            "-newkey",
            algorithm,
            "-pkeyopt",
            key,
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ]);
    }
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
    ]);
    // Self-signed without an extension file: OpenSSL writes a v1 certificate.
    for name in ["v1", "v1-ec"] {
        openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-signkey",
            &format!("{name}.key"),
            "-days",
            "2",
            "-out",
            &format!("{name}.crt"),
        ]);
        let text = openssl(&["x509", "-in", &format!("{name}.crt"), "-noout", "-text"]);
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(
            text.contains("Version: 1 (0x0)"),
            "{name} is not a v1 certificate: {text}"
        );
    }
}

impl Cluster {
    /// initdb + start on a free port of 127.0.0.1 and 127.0.0.2 (an address the CA's
    /// certificate does not name). `tls`: the certificate and key (`<name>.crt`,
    /// `<name>.key` in `certs`) to start with `ssl=on`; `None` starts with `ssl=off`.
    /// `settings`: more `-c name=value` for the server.
    fn start(root: &Path, certs: &Path, tls: Option<&str>, settings: &str) -> Cluster {
        let bindir = bindir();
        let data = root.join("data");
        let port = free_port();
        std::fs::create_dir_all(&data).unwrap();
        if current_uid() == 0 {
            run(Command::new("chown").args(["-R", "postgres:"]).arg(root));
        }
        run(as_postgres(&bindir.join("initdb"))
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "-D"])
            .arg(&data));
        if let Some(name) = tls {
            for ext in ["crt", "key"] {
                std::fs::copy(
                    certs.join(format!("{name}.{ext}")),
                    data.join(format!("server.{ext}")),
                )
                .unwrap();
            }
            if current_uid() == 0 {
                run(Command::new("chown").args(["-R", "postgres:"]).arg(&data));
            }
            run(Command::new("chmod")
                .arg("600")
                .arg(data.join("server.key")));
        }
        let ssl = if tls.is_some() { "on" } else { "off" };
        run(as_postgres(&bindir.join("pg_ctl"))
            .args(["-w", "-t", "60", "-D"])
            .arg(&data)
            .arg("-l")
            .arg(data.join("server.log"))
            .arg("-o")
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1,127.0.0.2 -c ssl={ssl} {settings}",
                data.display()
            ))
            .arg("start"));
        Cluster { bindir, data, port }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bindir.join("pg_ctl"))
            .args(["-m", "immediate", "-D"])
            .arg(&self.data)
            .arg("stop")
            .output();
    }
}

/// A cluster started with the certificate `tls` (see [`Cluster::start`]), the
/// certificates it was made with, and a temporary directory removed after the cluster
/// has stopped.
struct Fixture {
    cluster: Option<Cluster>,
    root: PathBuf,
    certs: PathBuf,
}

impl Fixture {
    fn start(tls: Option<&str>) -> Fixture {
        Fixture::start_with(tls, "")
    }

    /// [`Fixture::start`] with more server settings (`-c name=value ...`).
    fn start_with(tls: Option<&str>, settings: &str) -> Fixture {
        let root = std::env::temp_dir().join(format!("dispute-tls-{}", uuid::Uuid::now_v7()));
        let certs = root.join("certs");
        std::fs::create_dir_all(&certs).unwrap();
        certificates(&certs);
        let cluster = Some(Cluster::start(&root, &certs, tls, settings));
        Fixture {
            cluster,
            root,
            certs,
        }
    }

    /// A `DATABASE_URL` for this cluster at `host` with the query `query`.
    fn url_at(&self, host: &str, query: &str) -> String {
        let port = self.cluster.as_ref().unwrap().port;
        format!("postgres://postgres@{host}:{port}/postgres?{query}")
    }

    /// A `DATABASE_URL` for this cluster at `localhost` with the query `query`.
    fn url(&self, query: &str) -> String {
        self.url_at("localhost", query)
    }

    /// `sslmode=<mode>&sslrootcert=<certs>/<root>`.
    fn verify(&self, mode: &str, root: &str) -> String {
        format!(
            "sslmode={mode}&sslrootcert={}",
            self.certs.join(root).display()
        )
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        drop(self.cluster.take());
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// `dispute-service migrate` against `url`: its exit status and stderr, and how long it took.
fn migrate(url: &str) -> (bool, String, Duration) {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_dispute-service"))
        .arg("migrate")
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed(),
    )
}

/// Connects through the service's own pool ([`startup::pool`], from `DATABASE_URL` as
/// given) and asks PostgreSQL whether this session is encrypted (`pg_stat_ssl`).
async fn encrypted(url: &str) -> Result<bool, sqlx::Error> {
    this_session(
        url,
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .await
}

/// The answer to `query` in a session of the service's own pool to `url`.
async fn this_session<T>(url: &str, query: &'static str) -> Result<T, sqlx::Error>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
{
    let pool = startup::pool(&DatabaseConfig {
        database_url: Secret::new(url),
        db_max_connections: 1,
        db_acquire_timeout: Duration::from_secs(10),
        db_statement_timeout: Duration::from_secs(10),
    })
    .unwrap();
    let value = sqlx::query_scalar::<_, T>(query).fetch_one(&pool).await;
    pool.close().await;
    value
}

/// Asserts that `url` connects, encrypted (`true`) or in plain text (`false`).
async fn assert_connects(url: &str, encrypted_expected: bool) {
    match encrypted(url).await {
        Ok(ssl) => assert_eq!(ssl, encrypted_expected, "{url}: pg_stat_ssl.ssl"),
        Err(error) => panic!("{url} must connect: {error}"),
    }
}

/// Asserts that `url` is refused because of the server's certificate, both by a
/// connection and by `dispute-service migrate` (at once, with the error that says so).
async fn assert_certificate_refused(url: &str) {
    match encrypted(url).await {
        Ok(ssl) => panic!("{url} must be refused, but connected (ssl: {ssl})"),
        Err(error) => assert!(
            error.to_string().contains("invalid peer certificate"),
            "{url} must be refused for its certificate: {error}"
        ),
    }
    let (ok, stderr, took) = migrate(url);
    println!("{url}: refused after {took:?}: {stderr}");
    assert!(!ok, "{url}: migrate must fail");
    assert!(
        stderr.contains("connecting to PostgreSQL over TLS failed"),
        "the error says what failed: {stderr}"
    );
    // Refused at once, not after the minute of retries an outage gets.
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[tokio::test]
async fn verify_full_connects_with_the_right_ca_and_another_ca_is_refused_at_startup() {
    let db = Fixture::start(Some("server"));

    let (ok, stderr, _) = migrate(&db.url(&db.verify("verify-full", "ca.crt")));
    assert!(ok, "verify-full with the right CA: {stderr}");
    assert_connects(&db.url(&db.verify("verify-full", "ca.crt")), true).await;
    let (ok, stderr, _) = migrate(&db.url("sslmode=require"));
    assert!(ok, "require: {stderr}");

    assert_certificate_refused(&db.url(&db.verify("verify-full", "other-ca.crt"))).await;
}

#[tokio::test]
async fn verify_full_refuses_a_host_name_the_certificate_does_not_name() {
    let db = Fixture::start(Some("server"));
    // The certificate names localhost and 127.0.0.1, not 127.0.0.2: the same server,
    // the same chain, another name.
    assert_connects(
        &db.url_at("127.0.0.1", &db.verify("verify-full", "ca.crt")),
        true,
    )
    .await;
    assert_certificate_refused(&db.url_at("127.0.0.2", &db.verify("verify-full", "ca.crt"))).await;
    // verify-ca does not check the name.
    assert_connects(
        &db.url_at("127.0.0.2", &db.verify("verify-ca", "ca.crt")),
        true,
    )
    .await;
}

#[tokio::test]
async fn verify_ca_connects_with_the_root_that_signed_the_certificate_and_refuses_another() {
    let db = Fixture::start(Some("server"));
    assert_connects(&db.url(&db.verify("verify-ca", "ca.crt")), true).await;
    assert_certificate_refused(&db.url(&db.verify("verify-ca", "other-ca.crt"))).await;
}

#[tokio::test]
async fn prefer_encrypts_to_a_server_with_a_self_signed_v1_certificate() {
    let db = Fixture::start(Some("v1"));
    assert_connects(&db.url("sslmode=prefer"), true).await;
    // prefer is the default: a DATABASE_URL without sslmode, through `migrate` too.
    assert_connects(&db.url(""), true).await;
    let (ok, stderr, _) = migrate(&db.url(""));
    assert!(ok, "the default sslmode (prefer): {stderr}");
}

#[tokio::test]
async fn require_encrypts_to_a_server_with_a_self_signed_v1_certificate() {
    let db = Fixture::start(Some("v1"));
    assert_connects(&db.url("sslmode=require"), true).await;
    let (ok, stderr, _) = migrate(&db.url("sslmode=require"));
    assert!(ok, "require: {stderr}");
}

#[tokio::test]
async fn verify_ca_refuses_a_self_signed_v1_certificate_its_root_did_not_sign() {
    let db = Fixture::start(Some("v1"));
    assert_certificate_refused(&db.url(&db.verify("verify-ca", "ca.crt"))).await;
    // The server itself is reachable: it is the certificate that is refused.
    assert_connects(&db.url("sslmode=require"), true).await;
}

#[tokio::test]
async fn verify_full_refuses_a_self_signed_v1_certificate_its_root_did_not_sign() {
    let db = Fixture::start(Some("v1"));
    assert_certificate_refused(&db.url(&db.verify("verify-full", "ca.crt"))).await;
    assert_connects(&db.url("sslmode=require"), true).await;
}

#[tokio::test]
async fn disable_never_uses_tls_even_when_the_server_offers_it() {
    let db = Fixture::start(Some("v1"));
    assert_connects(&db.url("sslmode=disable"), false).await;
}

#[tokio::test]
async fn prefer_talks_plain_text_to_a_server_without_ssl_and_require_refuses() {
    let db = Fixture::start(None);
    assert_connects(&db.url("sslmode=prefer"), false).await;
    assert_connects(&db.url(""), false).await;
    let error = encrypted(&db.url("sslmode=require"))
        .await
        .expect_err("require must refuse a server without TLS");
    assert!(
        error.to_string().contains("server does not support TLS"),
        "{error}"
    );
}

#[tokio::test]
async fn require_and_prefer_encrypt_over_tls_1_2_to_self_signed_v1_certificates() {
    // TLS 1.2 signs the key exchange otherwise than 1.3 (and says less about how): the
    // same answers for an RSA and an EC key.
    for certificate in ["v1", "v1-ec"] {
        let db = Fixture::start_with(
            Some(certificate),
            "-c ssl_min_protocol_version=TLSv1.2 -c ssl_max_protocol_version=TLSv1.2",
        );
        for mode in ["require", "prefer"] {
            let url = db.url(&format!("sslmode={mode}"));
            let version = this_session::<Option<String>>(
                &url,
                "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            )
            .await;
            match version {
                Ok(version) => assert_eq!(version.as_deref(), Some("TLSv1.2"), "{url}"),
                Err(error) => panic!("{certificate}: {url} must connect: {error}"),
            }
        }
    }
}
