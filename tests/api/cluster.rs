//! A PostgreSQL cluster of the test's own, from this machine's PostgreSQL binaries (as
//! `scripts/with-db` finds them), so a test can restart or crash it. Run as the
//! `postgres` user when the tests run as root (PostgreSQL refuses root).

use crate::helpers::free_port;
use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

pub struct Cluster {
    bindir: PathBuf,
    data: PathBuf,
    pub port: u16,
}

fn bindir() -> PathBuf {
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    if let Some(dir) = from_pg_config.filter(|dir| dir.join("initdb").exists()) {
        return dir;
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL binaries under /usr/lib/postgresql")
        .filter_map(|entry| Some(entry.ok()?.path().join("bin")))
        .filter(|dir| dir.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop().expect("an initdb")
}

fn as_postgres(program: PathBuf) -> Command {
    // SAFETY-free check of the effective user: root has uid 0.
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
    if root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

impl Cluster {
    /// initdb and start a cluster on a free port; its `dispute` database exists.
    pub fn start() -> Cluster {
        let bindir = bindir();
        let data = std::env::temp_dir().join(format!("dispute-test-pg-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&data).unwrap();
        let _ = Command::new("chown")
            .args(["postgres:", data.to_str().unwrap()])
            .status();
        let status = as_postgres(bindir.join("initdb"))
            .args([
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "initdb");
        let cluster = Cluster {
            bindir,
            data,
            port: free_port(),
        };
        cluster.pg_ctl(&["start", "-w", "-t", "60"]);
        let created = Command::new(cluster.bindir.join("psql"))
            .args([
                "-X",
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                &cluster.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-c", "CREATE DATABASE dispute"])
            .status()
            .unwrap();
        assert!(created.success(), "CREATE DATABASE");
        cluster
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/dispute", self.port)
    }

    fn pg_ctl(&self, args: &[&str]) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=100",
            self.port,
            self.data.display()
        );
        let status = as_postgres(self.bindir.join("pg_ctl"))
            .args(["-D", self.data.to_str().unwrap(), "-l"])
            .arg(self.data.join("server.log"))
            .args(["-o", &options])
            .args(args)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "pg_ctl {args:?}");
    }

    /// `pg_ctl stop -m <mode>`, a second down, then `pg_ctl start` (fast: sessions ended
    /// cleanly; immediate: a crash, recovery from the WAL on start). The second makes the
    /// outage long enough for a health check to see it.
    pub fn restart(&self, mode: &str) {
        self.pg_ctl(&["stop", "-w", "-t", "60", "-m", mode]);
        std::thread::sleep(std::time::Duration::from_secs(1));
        self.pg_ctl(&["start", "-w", "-t", "60"]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_postgres(self.bindir.join("pg_ctl"))
            .args(["-D", self.data.to_str().unwrap(), "stop", "-m", "immediate"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}
