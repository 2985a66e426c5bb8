//! Which broker the relay publishes to, from `--broker URL`:
//!
//! - `nats://HOST:PORT[?stream=KOPEK&subject_prefix=kopek]`: a JetStream stream (created if
//!   missing) over the subjects `<prefix>.<tenant>.<event type>`.
//! - `amqp://USER:PASS@HOST:PORT/VHOST[?exchange=kopek.events&queue=NAME]`: a durable topic
//!   exchange, routing key = event type; with `queue`, a durable queue bound to every event is
//!   declared too, so nothing is dropped before the first consumer binds. Other query
//!   parameters (`heartbeat`, `connection_timeout`, ...) go to the AMQP client.
//! - `kafka://HOST:PORT[,HOST:PORT][?topic_prefix=kopek&partitions=1]`: a topic per event
//!   family, `<prefix>.accounts|transfers|users|orders`, created if missing.

use crate::consumer::Source;
use crate::consumer::amqp_source::AmqpSource;
use crate::consumer::kafka_source::KafkaSource;
use crate::consumer::nats_source::NatsSource;
use crate::sink::{Sink, amqp::AmqpSink, kafka::KafkaSink, nats::NatsSink};

pub const DEFAULT_STREAM: &str = "KOPEK";
pub const DEFAULT_SUBJECT_PREFIX: &str = "kopek";
pub const DEFAULT_EXCHANGE: &str = "kopek.events";
pub const DEFAULT_TOPIC_PREFIX: &str = "kopek";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Broker {
    Nats { server: String, stream: String, subject_prefix: String },
    Amqp { uri: String, exchange: String, queue: Option<String> },
    Kafka { bootstrap: String, topic_prefix: String, partitions: i32 },
}

impl Broker {
    pub fn parse(url: &str) -> Result<Broker, String> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut params = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            params.push((name.to_owned(), value.to_owned()));
        }
        let mut take = |name: &str| {
            let position = params.iter().position(|(param, _)| param == name)?;
            Some(params.remove(position).1)
        };
        match base.split_once("://").map(|(scheme, _)| scheme) {
            Some("nats") => {
                let stream = take("stream").unwrap_or_else(|| DEFAULT_STREAM.to_owned());
                let subject_prefix =
                    take("subject_prefix").unwrap_or_else(|| DEFAULT_SUBJECT_PREFIX.to_owned());
                if let Some((name, _)) = params.first() {
                    return Err(format!(
                        "unknown NATS broker parameter {name:?} (known: stream, subject_prefix)"
                    ));
                }
                if !is_token(&stream) {
                    return Err("the NATS stream name must be letters, digits, _ and -".to_owned());
                }
                if !subject_prefix.split('.').all(is_token) {
                    return Err(
                        "the NATS subject prefix must be dot-separated words of letters, digits, _ and -"
                            .to_owned(),
                    );
                }
                Ok(Broker::Nats { server: base.to_owned(), stream, subject_prefix })
            }
            Some("amqp" | "amqps") => {
                let exchange = take("exchange").unwrap_or_else(|| DEFAULT_EXCHANGE.to_owned());
                let queue = take("queue");
                if exchange.is_empty() || exchange.len() > 255 {
                    return Err("the AMQP exchange name must be 1 to 255 characters".to_owned());
                }
                if queue.as_ref().is_some_and(|queue| queue.is_empty() || queue.len() > 255) {
                    return Err("the AMQP queue name must be 1 to 255 characters".to_owned());
                }
                let rest: Vec<String> =
                    params.iter().map(|(name, value)| format!("{name}={value}")).collect();
                let uri = if rest.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", rest.join("&"))
                };
                Ok(Broker::Amqp { uri, exchange, queue })
            }
            Some("kafka") => {
                let topic_prefix =
                    take("topic_prefix").unwrap_or_else(|| DEFAULT_TOPIC_PREFIX.to_owned());
                let partitions = match take("partitions") {
                    None => 1,
                    Some(text) => text
                        .parse::<i32>()
                        .ok()
                        .filter(|count| (1..=1_000).contains(count))
                        .ok_or_else(|| "partitions must be 1 to 1000".to_owned())?,
                };
                if let Some((name, _)) = params.first() {
                    return Err(format!(
                        "unknown Kafka broker parameter {name:?} (known: topic_prefix, partitions)"
                    ));
                }
                let valid =
                    |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-');
                if topic_prefix.is_empty()
                    || topic_prefix.len() > 200
                    || !topic_prefix.bytes().all(valid)
                {
                    return Err("the Kafka topic prefix must be letters, digits, '.', '_' and '-'"
                        .to_owned());
                }
                let bootstrap =
                    base.trim_start_matches("kafka://").trim_end_matches('/').to_owned();
                if bootstrap.is_empty() {
                    return Err("kafka:// needs HOST:PORT (several comma-separated)".to_owned());
                }
                Ok(Broker::Kafka { bootstrap, topic_prefix, partitions })
            }
            _ => Err("must be a nats://, amqp:// or kafka:// URL".to_owned()),
        }
    }

    /// The name the relay's cursor is kept under: one cursor per stream or exchange, so
    /// pointing kopek at a new one publishes the whole history there.
    pub fn sink_name(&self) -> String {
        match self {
            Broker::Nats { stream, .. } => format!("nats/{stream}"),
            Broker::Amqp { exchange, .. } => format!("amqp/{exchange}"),
            Broker::Kafka { topic_prefix, .. } => format!("kafka/{topic_prefix}"),
        }
    }

    /// Where the broker is, without credentials, for logs.
    pub fn describe(&self) -> String {
        let without_credentials = |url: &str| match url.split_once("://") {
            Some((scheme, rest)) => {
                let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
                format!("{scheme}://{}", host.split('?').next().unwrap_or_default())
            }
            None => String::new(),
        };
        match self {
            Broker::Nats { server, stream, .. } => {
                format!("{} stream {stream}", without_credentials(server))
            }
            Broker::Amqp { uri, exchange, .. } => {
                format!("{} exchange {exchange}", without_credentials(uri))
            }
            Broker::Kafka { bootstrap, topic_prefix, .. } => {
                format!("kafka://{bootstrap} topics {topic_prefix}.*")
            }
        }
    }

    /// Where `consumer` reads the event types `types` from this broker; `member` names this
    /// process among the consumer's readers (Kafka static membership).
    pub fn source(&self, consumer: &str, types: &[&str], member: &str) -> Box<dyn Source> {
        match self {
            Broker::Nats { server, stream, subject_prefix } => Box::new(NatsSource::new(
                server.clone(),
                stream.clone(),
                subject_prefix.clone(),
                consumer,
                types,
            )),
            Broker::Amqp { uri, exchange, .. } => {
                Box::new(AmqpSource::new(uri.clone(), exchange.clone(), consumer, types))
            }
            Broker::Kafka { bootstrap, topic_prefix, partitions } => Box::new(KafkaSource::new(
                bootstrap.clone(),
                topic_prefix,
                *partitions,
                consumer,
                types,
                member,
            )),
        }
    }

    pub fn sink(&self) -> Box<dyn Sink> {
        match self {
            Broker::Nats { server, stream, subject_prefix } => {
                Box::new(NatsSink::new(server.clone(), stream.clone(), subject_prefix.clone()))
            }
            Broker::Amqp { uri, exchange, queue } => {
                Box::new(AmqpSink::new(uri.clone(), exchange.clone(), queue.clone()))
            }
            Broker::Kafka { bootstrap, topic_prefix, partitions } => {
                Box::new(KafkaSink::new(bootstrap.clone(), topic_prefix.clone(), *partitions))
            }
        }
    }
}

fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_broker() {
        assert_eq!(
            Broker::parse("nats://127.0.0.1:4222").expect("nats"),
            Broker::Nats {
                server: "nats://127.0.0.1:4222".to_owned(),
                stream: "KOPEK".to_owned(),
                subject_prefix: "kopek".to_owned()
            }
        );
        assert_eq!(
            Broker::parse("nats://h:1?stream=T1&subject_prefix=test.t1").expect("nats"),
            Broker::Nats {
                server: "nats://h:1".to_owned(),
                stream: "T1".to_owned(),
                subject_prefix: "test.t1".to_owned()
            }
        );
        assert_eq!(
            Broker::parse("amqp://guest:guest@h:5672/%2f?heartbeat=10&queue=q").expect("amqp"),
            Broker::Amqp {
                uri: "amqp://guest:guest@h:5672/%2f?heartbeat=10".to_owned(),
                exchange: "kopek.events".to_owned(),
                queue: Some("q".to_owned())
            }
        );
        let amqp = Broker::parse("amqp://guest:secret@h:5672/%2f?exchange=x").expect("amqp");
        assert_eq!(amqp.sink_name(), "amqp/x");
        assert!(!amqp.describe().contains("secret"), "{}", amqp.describe());
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (url, says) in [
            ("http://h", "must be a nats://"),
            ("kafka://h:9092?partitions=0", "partitions must be"),
            ("kafka://", "needs HOST:PORT"),
            ("nats://h?stream=a.b", "stream name"),
            ("nats://h?subject_prefix=a..b", "subject prefix"),
            ("nats://h?bogus=1", "unknown NATS broker parameter"),
            ("amqp://h?exchange=", "exchange name"),
        ] {
            let error = Broker::parse(url).expect_err(url);
            assert!(error.contains(says), "{url}: {error}");
        }
    }
}
