//! One `kopek serve` process on random loopback ports, for tests and examples: started with
//! the flags a caller adds, ready once it has printed its listeners (`startup`), stopped with
//! SIGTERM or SIGKILL, and killed if it is dropped while running.

use crate::startup::Listeners;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// How long a process may take to print its listeners.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a process may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// What to start: the binary, its data directory, and what the caller adds.
#[derive(Clone, Debug)]
pub struct Launch {
    pub binary: PathBuf,
    pub data_dir: PathBuf,
    /// Flags after `serve --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --data-dir DIR`.
    pub args: Vec<String>,
    /// Environment variables, after `RUST_LOG=warn`.
    pub env: Vec<(String, String)>,
    /// Keep what the process writes to stderr (`ServerProcess::log_lines`) instead of passing
    /// it through.
    pub capture_stderr: bool,
}

impl Launch {
    pub fn new(binary: impl Into<PathBuf>, data_dir: &Path) -> Launch {
        Launch {
            binary: binary.into(),
            data_dir: data_dir.to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            capture_stderr: false,
        }
    }

    /// Whether the flags make a process that serves gRPC (workers, relays and ingesters do not).
    fn serves_grpc(&self) -> bool {
        !self.args.windows(2).any(|pair| {
            pair[0] == "--role" && matches!(pair[1].as_str(), "worker" | "relay" | "ingest")
        })
    }

    /// The HTTP listeners the flags ask for: the default one and every `--http-listen` added.
    fn http_listeners(&self) -> usize {
        1 + self.args.iter().filter(|arg| *arg == "--http-listen").count()
    }

    fn serves_metrics(&self) -> bool {
        self.args.iter().any(|arg| arg == "--metrics-listen")
    }
}

/// A running `kopek serve`.
pub struct ServerProcess {
    child: Child,
    /// The bound addresses (and the admin key a first start with auth required printed).
    pub listeners: Listeners,
    logs: Arc<Mutex<Vec<String>>>,
}

impl ServerProcess {
    /// Starts the process and waits until it has printed every listener its flags ask for.
    /// Panics with the reason when it cannot: this is a test helper.
    pub fn start(launch: &Launch) -> ServerProcess {
        let mut child = Command::new(&launch.binary)
            .args(["serve", "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&launch.data_dir)
            .args(&launch.args)
            .env("RUST_LOG", "warn")
            .envs(launch.env.iter().map(|(name, value)| (name.as_str(), value.as_str())))
            .stdout(Stdio::piped())
            .stderr(if launch.capture_stderr { Stdio::piped() } else { Stdio::inherit() })
            .spawn()
            .expect("spawn kopek serve");
        let logs = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    logs.lock().expect("logs").push(line);
                }
            });
        }
        let stdout = child.stdout.take().expect("piped stdout");
        let (lines, received) = mpsc::channel();
        // Reads to the end, so the process never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let mut listeners = Listeners::default();
        while (launch.serves_grpc() && listeners.grpc.is_none())
            || listeners.http.len() < launch.http_listeners()
            || (launch.serves_metrics() && listeners.metrics.is_none())
        {
            let left = deadline.saturating_duration_since(Instant::now());
            let line =
                received.recv_timeout(left).expect("kopek serve printed its listeners in time");
            listeners.read(&line);
        }
        ServerProcess { child, listeners, logs }
    }

    /// The stderr lines captured so far (with `Launch::capture_stderr`).
    pub fn log_lines(&self) -> Vec<String> {
        self.logs.lock().expect("logs").clone()
    }

    /// Where the captured stderr lines go, shared.
    pub fn logs(&self) -> Arc<Mutex<Vec<String>>> {
        self.logs.clone()
    }

    /// Waits for the process to end on its own.
    pub fn wait_for_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll child") {
                return status;
            }
            assert!(Instant::now() < deadline, "kopek did not exit in time");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to flush or drain anything.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }

    /// SIGTERM, then waits for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        self.wait_for_exit(STOP_TIMEOUT)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
