//! Webhook subscriptions, their deliveries and the attempt log, as the store keeps them, with
//! the one mapping from columns both backends use.

use crate::rows::Columns;
use kopek_core::Timestamp;

/// The columns each row is selected with, in the order `read` takes them.
pub const WEBHOOK_COLUMNS: &str = "id, tenant, url, event_types, secret, created_at";
pub const DELIVERY_COLUMNS: &str = "id, subscription_id, event_id, event_type, body, status, attempts, \
     dead_after, next_attempt_at, last_status_code, last_error, created_at, updated_at";
pub const ATTEMPT_COLUMNS: &str = "delivery_id, attempt, at, status_code, error, duration_ms";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    pub id: String,
    pub tenant: String,
    pub url: String,
    /// Event types delivered; empty: every type.
    pub event_types: Vec<String>,
    /// Signs every delivery (HMAC-SHA256).
    pub secret: String,
    pub created_at: Timestamp,
}

impl Webhook {
    pub fn wants(&self, kind: &str) -> bool {
        self.event_types.is_empty() || self.event_types.iter().any(|wanted| wanted == kind)
    }

    pub fn read<C: Columns>(row: &C) -> Result<Webhook, C::Error> {
        let types = row.text(3)?;
        Ok(Webhook {
            id: row.text(0)?,
            tenant: row.text(1)?,
            url: row.text(2)?,
            event_types: types
                .split(',')
                .filter(|kind| !kind.is_empty())
                .map(str::to_owned)
                .collect(),
            secret: row.text(4)?,
            created_at: Timestamp::from_unix_micros(row.integer(5)?),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    Delivered,
    /// Out of attempts; a manual redelivery gives it more.
    Dead,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Dead => "dead",
        }
    }

    pub fn parse(text: &str) -> Option<DeliveryStatus> {
        match text {
            "pending" => Some(DeliveryStatus::Pending),
            "delivered" => Some(DeliveryStatus::Delivered),
            "dead" => Some(DeliveryStatus::Dead),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    pub subscription_id: String,
    pub event_id: String,
    pub event_type: String,
    /// The event document sent as the request body.
    pub body: String,
    pub status: DeliveryStatus,
    /// Attempts made so far, over every round.
    pub attempts: u32,
    /// Dead-lettered once `attempts` reaches this.
    pub dead_after: u32,
    pub next_attempt_at: Timestamp,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

fn count(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

fn status_code(value: Option<i64>) -> Option<u16> {
    value.and_then(|code| u16::try_from(code).ok())
}

impl Delivery {
    /// `Ok(Err(..))`: the row holds a status kopek does not know.
    pub fn read<C: Columns>(row: &C) -> Result<Result<Delivery, String>, C::Error> {
        let status = row.text(5)?;
        let Some(status) = DeliveryStatus::parse(&status) else {
            return Ok(Err(format!("delivery status '{status}' is not valid")));
        };
        Ok(Ok(Delivery {
            id: row.text(0)?,
            subscription_id: row.text(1)?,
            event_id: row.text(2)?,
            event_type: row.text(3)?,
            body: row.text(4)?,
            status,
            attempts: count(row.integer(6)?),
            dead_after: count(row.integer(7)?),
            next_attempt_at: Timestamp::from_unix_micros(row.integer(8)?),
            last_status_code: status_code(row.optional_integer(9)?),
            last_error: row.optional_text(10)?,
            created_at: Timestamp::from_unix_micros(row.integer(11)?),
            updated_at: Timestamp::from_unix_micros(row.integer(12)?),
        }))
    }
}

/// One try at a delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub delivery_id: String,
    /// 1 for the first attempt ever, counting on across redeliveries.
    pub attempt: u32,
    pub at: Timestamp,
    /// The receiver's HTTP status, if it answered.
    pub status_code: Option<u16>,
    /// Why it failed, when it did.
    pub error: Option<String>,
    pub duration_ms: u64,
}

impl Attempt {
    pub fn read<C: Columns>(row: &C) -> Result<Attempt, C::Error> {
        Ok(Attempt {
            delivery_id: row.text(0)?,
            attempt: count(row.integer(1)?),
            at: Timestamp::from_unix_micros(row.integer(2)?),
            status_code: status_code(row.optional_integer(3)?),
            error: row.optional_text(4)?,
            duration_ms: u64::try_from(row.integer(5)?).unwrap_or(0),
        })
    }
}

/// What an attempt decided: the attempt for the log and the delivery's next state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptResult {
    pub attempt: Attempt,
    pub status: DeliveryStatus,
    /// When to try again (meaningful while `Pending`).
    pub next_attempt_at: Timestamp,
    /// The claim the attempt was made under (`claim_deliveries`' `until`): the result counts
    /// only if the delivery was not claimed again or redelivered meanwhile.
    pub claimed_until: Timestamp,
}
