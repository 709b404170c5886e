//! PostgreSQL over TLS: a PostgreSQL of the test's own, started with `ssl=on` and a
//! certificate from a CA the test makes with openssl. `verify-full` with that CA connects;
//! another CA is refused at once with a startup error that says so.

use crate::helpers::free_port;
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

/// A CA and a certificate it signed for `localhost` / 127.0.0.1, in `dir`.
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
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
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
}

impl Cluster {
    /// initdb + start with `ssl=on` on a free port; certificates in `certs`.
    fn start(root: &Path, certs: &Path) -> Cluster {
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
        for file in ["server.crt", "server.key"] {
            std::fs::copy(certs.join(file), data.join(file)).unwrap();
        }
        if current_uid() == 0 {
            run(Command::new("chown").args(["-R", "postgres:"]).arg(&data));
        }
        run(Command::new("chmod")
            .arg("600")
            .arg(data.join("server.key")));
        run(as_postgres(&bindir.join("pg_ctl"))
            .args(["-w", "-t", "60", "-D"])
            .arg(&data)
            .arg("-l")
            .arg(data.join("server.log"))
            .arg("-o")
            .arg(format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c ssl=on",
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

#[test]
fn verify_full_connects_with_the_right_ca_and_another_ca_is_refused_at_startup() {
    let root = std::env::temp_dir().join(format!("dispute-tls-{}", uuid::Uuid::now_v7()));
    let certs = root.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    certificates(&certs);
    let cluster = Cluster::start(&root, &certs);
    let url = |query: &str| {
        format!(
            "postgres://postgres@localhost:{}/postgres?{query}",
            cluster.port
        )
    };

    let ca = certs.join("ca.crt");
    let (ok, stderr, _) = migrate(&url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        ca.display()
    )));
    assert!(ok, "verify-full with the right CA: {stderr}");
    let (ok, stderr, _) = migrate(&url("sslmode=require"));
    assert!(ok, "require: {stderr}");

    let other = certs.join("other-ca.crt");
    let (ok, stderr, took) = migrate(&url(&format!(
        "sslmode=verify-full&sslrootcert={}",
        other.display()
    )));
    println!("with the wrong CA, after {took:?}: {stderr}");
    assert!(!ok, "a certificate from another CA must be refused");
    assert!(
        stderr.contains("connecting to PostgreSQL over TLS failed"),
        "the error says what failed: {stderr}"
    );
    // Refused at once, not after the minute of retries an outage gets.
    assert!(took < Duration::from_secs(20), "{took:?}");
    drop(cluster);
    let _ = std::fs::remove_dir_all(&root);
}
