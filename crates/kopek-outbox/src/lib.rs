//! kopek-outbox: delivers committed events beyond this process. The feed, filters, documents
//! and subscriptions it builds on are `kopek-events`.
//!
//! - `relay` publishes every event, in order and at least once, to a broker (`broker`,
//!   `sink`) as the documents of `kopek_events::envelope`;
//! - `webhooks` signs and POSTs events to their subscriptions (`resolver` keeps it off
//!   internal addresses);
//! - `consumer` runs the consumers of the outbox (analytics, payments, the webhook notifier);
//! - `orders` is the in-process payment saga: every pending order gets paid exactly once.

pub mod broker;
pub mod consumer;
pub mod orders;
pub mod relay;
pub mod resolver;
pub mod sink;
pub mod webhooks;
