//! The start-up contract: once `kopek serve` listens it prints one line per listener, and
//! scripts and tests read the bound addresses (a port of 0 becomes a real one) from them.
//! The server writes them with [`line`] and readers parse them with [`Listeners::read`].

/// What a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    Grpc,
    Http,
    Metrics,
}

impl Listener {
    fn prefix(self) -> &'static str {
        match self {
            Listener::Grpc => "kopek: grpc listening on ",
            Listener::Http => "kopek: http listening on ",
            Listener::Metrics => "kopek: metrics listening on ",
        }
    }
}

/// The line `kopek serve` prints for a listener bound to `address`.
pub fn line(listener: Listener, address: impl std::fmt::Display) -> String {
    format!("{}{address}", listener.prefix())
}

/// The bound addresses read so far (`host:port`), and the admin key a first start with auth
/// required prints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listeners {
    pub grpc: Option<String>,
    /// Every HTTP listener, in the order they were given.
    pub http: Vec<String>,
    pub metrics: Option<String>,
    pub admin_key: Option<String>,
}

impl Listeners {
    /// Takes in one line of the server's output; other lines are ignored.
    pub fn read(&mut self, line: &str) {
        let line = line.trim_end();
        if let Some(address) = line.strip_prefix(Listener::Grpc.prefix()) {
            self.grpc = Some(address.to_owned());
        } else if let Some(address) = line.strip_prefix(Listener::Http.prefix()) {
            self.http.push(address.to_owned());
        } else if let Some(address) = line.strip_prefix(Listener::Metrics.prefix()) {
            self.metrics = Some(address.to_owned());
        } else if let Some((_, key)) = line.split_once("kopek: admin key ") {
            self.admin_key = key.rsplit(' ').next().map(str::to_owned);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lines_the_server_writes_read_back() {
        let mut listeners = Listeners::default();
        for text in [
            line(Listener::Grpc, "127.0.0.1:50051"),
            "something else".to_owned(),
            line(Listener::Http, "127.0.0.1:8000"),
            line(Listener::Http, "[::1]:8001"),
            line(Listener::Metrics, "127.0.0.1:9100"),
        ] {
            listeners.read(&text);
        }
        assert_eq!(listeners.grpc.as_deref(), Some("127.0.0.1:50051"));
        assert_eq!(listeners.http, ["127.0.0.1:8000", "[::1]:8001"]);
        assert_eq!(listeners.metrics.as_deref(), Some("127.0.0.1:9100"));
        assert_eq!(listeners.admin_key, None);
    }
}
