//! The real `dispute-service` binary as a child process: configured only by its
//! environment, as in production, stopped with SIGTERM, its stderr kept line by line.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sqlx::PgPool;

use crate::helpers::SECRET;

/// How long the child has to start serving.
const STARTUP: Duration = Duration::from_secs(30);

pub struct Binary {
    child: Child,
    /// The gRPC address it logged when it started serving.
    pub addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

/// The URL of the test's own database (`#[sqlx::test]` made it on `DATABASE_URL`'s server).
pub fn database_url(pool: &PgPool) -> String {
    let server = std::env::var("DATABASE_URL").expect("DATABASE_URL is set for the tests");
    let server = server.split('?').next().unwrap_or_default();
    let base = &server[..server.rfind('/').expect("a URL with a database path")];
    let database = pool.connect_options().get_database().unwrap().to_owned();
    format!("{base}/{database}")
}

impl Binary {
    /// Starts `dispute-service serve` on the test's database with JSON logs, a free port
    /// and `env` on top; returns once it logged that it serves.
    pub fn serve(pool: &PgPool, env: &[(&str, &str)]) -> Binary {
        Self::serve_url(&database_url(pool), env)
    }

    /// [`Binary::serve`] on the database at `url`.
    pub fn serve_url(url: &str, env: &[(&str, &str)]) -> Binary {
        let mut command = Command::new(env!("CARGO_BIN_EXE_dispute-service"));
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", url)
            .env("DISPUTE_JWT_HS256_SECRET", SECRET)
            .env("DISPUTE_LISTEN_ADDR", "127.0.0.1:0")
            .env("DISPUTE_METRICS_ADDR", "127.0.0.1:0")
            .env("DISPUTE_WORKER_ENABLED", "false")
            .env("DISPUTE_LOG_FORMAT", "json")
            .env("DISPUTE_SHUTDOWN_GRACE", "5s")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (name, value) in env {
            // An empty value unsets one of the defaults above.
            if value.is_empty() {
                command.env_remove(name);
            } else {
                command.env(name, value);
            }
        }
        let mut child = command.spawn().expect("starting the binary");
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let started = Instant::now();
        let addr = loop {
            let serving = lines.lock().unwrap().iter().find_map(|line| {
                let line: serde_json::Value = serde_json::from_str(line).ok()?;
                (line["fields"]["message"] == "serving")
                    .then(|| line["fields"]["addr"].as_str()?.parse().ok())
                    .flatten()
            });
            if let Some(addr) = serving {
                break addr;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the binary exited with {status} before serving:\n{}",
                    lines.lock().unwrap().join("\n")
                );
            }
            assert!(started.elapsed() < STARTUP, "the binary did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        Binary { child, addr, lines }
    }

    /// Every stderr line so far, parsed as JSON (a line that is not JSON fails the test).
    pub fn log(&self) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|_| panic!("not a JSON line: {line}"))
            })
            .collect()
    }

    /// SIGKILL: the process dies at once, mid-request, mid-transaction.
    pub fn kill_hard(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process's resident memory now, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("reading the child's /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a VmRSS line")
    }

    /// SIGTERM, then waits for the exit (at most `patience`).
    pub async fn terminate(mut self, patience: Duration) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if started.elapsed() > patience {
                let _ = self.child.kill();
                panic!("the binary did not exit within {patience:?} of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
