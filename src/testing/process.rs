//! The server binary in a process of its own: for tests that kill an instance, send it SIGTERM
//! or read what it prints, and for the load tools (its memory and file descriptors are its own,
//! not the load generator's).
//!
//! The binary's path is the caller's `env!("CARGO_BIN_EXE_livestage")`: Cargo sets it only
//! where tests and benches are compiled, not for this library.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct ServerProcess {
    child: Child,
    /// `http://host:port`, as the server reported it.
    pub base: String,
    /// Its data dir, when it is this process's own.
    dir: Option<tempfile::TempDir>,
    logs: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
}

impl ServerProcess {
    /// Starts `binary` on a free port and a data dir of its own (removed when this is dropped);
    /// `configure` sets the rest of its environment (it is given the data dir). Returns once the
    /// server reports its address.
    pub fn start(binary: &str, configure: impl FnOnce(&mut Command, &Path)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = Self::start_in(binary, dir.path(), configure);
        server.dir = Some(dir);
        server
    }

    /// Like [`ServerProcess::start`], on `data_dir`.
    pub fn start_in(binary: &str, data_dir: &Path, configure: impl FnOnce(&mut Command, &Path)) -> Self {
        let mut cmd = Command::new(binary);
        cmd.env("APP_DATA_DIR", data_dir)
            .env("LEPTOS_SITE_ADDR", "127.0.0.1:0")
            .env("MEDIA_UDP_PORT", "0")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        configure(&mut cmd, data_dir);
        let mut child = cmd.spawn().expect("server binary starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        let reader = std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(at) = line.find("listening on http://") {
                        let url: String = line[at + "listening on ".len()..].chars().take_while(|c| !c.is_whitespace()).collect();
                        let _ = tx.send(url);
                        sent = true;
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let mut server = Self { child, base: String::new(), dir: None, logs, reader: Some(reader) };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(base) => server.base = base,
            Err(_) => {
                server.kill();
                panic!("the server binary never reported its address; its log:\n{}", server.log());
            }
        }
        server
    }

    /// Waits (at most `limit`, without blocking the runtime) until `GET /ready` answers 200.
    pub async fn wait_ready(&mut self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while !ready(&self.base).await {
            if tokio::time::Instant::now() > deadline {
                self.kill();
                panic!("the server binary at {} never became ready; its log:\n{}", self.base, self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Its data dir, when it is this process's own.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("the server's own data dir").path()
    }

    pub fn port(&self) -> u16 {
        self.base.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port in the server's address")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it printed on stderr so far; all of it once it was killed.
    pub fn log(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// SIGKILL: the instance dies without a chance to clean up. Returns once its output is read.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        self.child.wait().expect("killed server reaped");
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let sent = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().expect("kill runs");
        assert!(sent.success(), "SIGTERM could not be sent");
    }

    /// Waits (at most `limit`, without blocking the runtime) for the process to exit.
    pub async fn exited_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("child status") {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Resident set size in MiB (0 where `/proc` does not say).
    pub fn rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0)
    }
}

/// Whether `GET /ready` on the server at `base` (`http://host:port`) answers 200.
async fn ready(base: &str) -> bool {
    let attempt = async {
        let mut conn = tokio::net::TcpStream::connect(base.trim_start_matches("http://")).await.ok()?;
        conn.write_all(b"GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.ok()?;
        let mut head = [0u8; 12];
        conn.read_exact(&mut head).await.ok()?;
        Some(head.ends_with(b" 200"))
    };
    matches!(tokio::time::timeout(Duration::from_secs(2), attempt).await, Ok(Some(true)))
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
