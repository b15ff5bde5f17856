//! Running the real server binary in its own process, for the load tools (its memory and file
//! descriptors are its own, not the load generator's) and for tests that kill an instance.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    child: Child,
    pub base: String,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `livestage` on a free port with `env` on top of bench defaults.
    pub fn start(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_livestage"));
        cmd.env("APP_DATA_DIR", dir.path())
            .env("LEPTOS_SITE_ADDR", "127.0.0.1:0")
            .env("API_SECRET_KEY", "bench-key")
            .env("MEDIA_UDP_PORT", "0")
            .env("AUTOSCALE", "false")
            .env("RATE_LIMIT_MAX_REQUESTS", "100000000")
            .env("MAX_VIEWERS_PER_STAGE", "1000000")
            .env("SCALE_UP_THRESHOLD", "1000000")
            .env("RUST_LOG", "warn,livestage=info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("server binary starts");
        let logs = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(logs).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(at) = line.find("listening on http://") {
                        let url: String = line[at + "listening on ".len()..].chars().take_while(|c| !c.is_whitespace()).collect();
                        let _ = tx.send(url);
                        sent = true;
                    }
                }
            }
        });
        let base = rx.recv_timeout(Duration::from_secs(60)).expect("server reports its address");
        Self { child, base, _dir: dir }
    }

    /// SIGKILL: the instance dies without a chance to clean up (the fail-over tests use it).
    #[allow(dead_code)]
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident set size in MiB.
    pub fn rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0)
    }

    /// Waits until `/ready` answers 200 (bounded).
    pub async fn ready(&self, client: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = client.get(format!("{}/ready", self.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("server at {} never became ready", self.base);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}
