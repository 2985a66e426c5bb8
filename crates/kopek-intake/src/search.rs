//! Transfer search as every surface reads it (`docs/api.md`, "Searching transfers"): the
//! filters arrive as text (a REST query string, gRPC fields, CLI flags), are read here by one
//! set of rules, and become the store's `TransferQuery` in the caller's tenant.

use crate::Intake;
use crate::access::unavailable;
use crate::fields::{given, page_size};
use kopek_auth::Principal;
use kopek_core::{
    AccountId, Amount, Currency, IdempotencyKey, Rejection, Tenant, Timestamp, Transfer,
    TransferKind, TransferStatus, limits,
};
use kopek_store::search::{SortOrder, TimeRange, TransferQuery};
use kopek_store::{Page, StoredEntry};

/// The prefix of a metadata filter's name on REST and in the CLI: `metadata.KEY=VALUE`.
pub const METADATA_PREFIX: &str = "metadata.";

/// A search's filters as they arrived; empty means not given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SearchInput {
    pub account: Option<String>,
    pub idempotency_key: Option<String>,
    /// Committed at or after (RFC 3339).
    pub after: Option<String>,
    /// Committed strictly before.
    pub before: Option<String>,
    pub effective_after: Option<String>,
    pub effective_before: Option<String>,
    pub kind: Option<String>,
    pub status: Option<String>,
    pub currency: Option<String>,
    /// Inclusive bounds, decimals in `currency`'s major units.
    pub min_amount: Option<String>,
    pub max_amount: Option<String>,
    pub metadata: Vec<(String, String)>,
    /// `asc` or `desc` (the default: newest first).
    pub order: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
    /// `entries`: each transfer comes with its entries (`kopek export` reads them so).
    pub include: Option<String>,
}

impl SearchInput {
    /// Reads a query string's pairs. A name it does not know, a filter given twice or a
    /// malformed limit is refused, so a typo never widens a search silently.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<SearchInput, Rejection> {
        let mut input = SearchInput::default();
        for (name, value) in pairs {
            if let Some(key) = name.strip_prefix(METADATA_PREFIX) {
                input.metadata.push((key.to_owned(), value.to_owned()));
                continue;
            }
            if name == "limit" {
                let limit = value.parse::<usize>().map_err(|_| {
                    Rejection::invalid(format!("limit '{value}' is not a whole number"))
                })?;
                if input.limit.replace(limit).is_some() {
                    return Err(twice(name));
                }
                continue;
            }
            let field = match name {
                "account" => &mut input.account,
                "idempotency_key" => &mut input.idempotency_key,
                "after" => &mut input.after,
                "before" => &mut input.before,
                "effective_after" => &mut input.effective_after,
                "effective_before" => &mut input.effective_before,
                "kind" => &mut input.kind,
                "status" => &mut input.status,
                "currency" => &mut input.currency,
                "min_amount" => &mut input.min_amount,
                "max_amount" => &mut input.max_amount,
                "order" => &mut input.order,
                "cursor" => &mut input.cursor,
                "include" => &mut input.include,
                other => {
                    return Err(Rejection::invalid(format!(
                        "unknown filter '{other}'; transfers are searched by {}",
                        FILTER_NAMES
                    )));
                }
            };
            if field.replace(value.to_owned()).is_some() {
                return Err(twice(name));
            }
        }
        Ok(input)
    }

    /// The store's query in `tenant`, every field checked.
    pub fn query(&self, tenant: &Tenant) -> Result<TransferQuery, Rejection> {
        let text = |field: &Option<String>| given(field.as_deref()).map(str::to_owned);
        let time = |field: &Option<String>, name: &str| -> Result<Option<Timestamp>, Rejection> {
            crate::fields::timestamp(field.as_deref(), name)
        };
        let account = text(&self.account)
            .map(|id| AccountId::parse_reference(&id).map(|id| id.in_tenant(tenant)))
            .transpose()?;
        let idempotency_key =
            text(&self.idempotency_key).map(|key| IdempotencyKey::parse(&key)).transpose()?;
        let committed = range(time(&self.after, "after")?, time(&self.before, "before")?)?;
        let effective = range(
            time(&self.effective_after, "effective_after")?,
            time(&self.effective_before, "effective_before")?,
        )?;
        let kind = text(&self.kind)
            .map(|kind| {
                TransferKind::parse(&kind).ok_or_else(|| {
                    Rejection::invalid(format!("kind '{kind}' is not one of {}", kinds()))
                })
            })
            .transpose()?;
        let status = text(&self.status)
            .map(|status| {
                TransferStatus::parse(&status).ok_or_else(|| {
                    Rejection::invalid(format!("status '{status}' is not one of {}", statuses()))
                })
            })
            .transpose()?;
        let currency = text(&self.currency).map(|code| Currency::parse(&code)).transpose()?;
        let amount = |field: &Option<String>, name: &str| -> Result<Option<i64>, Rejection> {
            let Some(text) = given(field.as_deref()) else { return Ok(None) };
            let currency = currency.ok_or_else(|| {
                Rejection::invalid(format!(
                    "{name} needs currency: an amount is read in its currency's units"
                ))
            })?;
            Ok(Some(Amount::parse_major(text, currency)?.minor()))
        };
        let (amount_min, amount_max) =
            (amount(&self.min_amount, "min_amount")?, amount(&self.max_amount, "max_amount")?);
        if let (Some(min), Some(max)) = (amount_min, amount_max)
            && min > max
        {
            return Err(Rejection::invalid("min_amount is more than max_amount"));
        }
        if self.metadata.len() > limits::METADATA_ENTRIES_MAX {
            return Err(Rejection::invalid(format!(
                "at most {} metadata filters",
                limits::METADATA_ENTRIES_MAX
            )));
        }
        let mut metadata: Vec<(String, String)> = Vec::with_capacity(self.metadata.len());
        for (key, value) in &self.metadata {
            if key.is_empty() || key.len() > limits::METADATA_KEY_BYTES_MAX {
                return Err(Rejection::invalid(format!(
                    "a metadata filter names a key of 1 to {} bytes: metadata.KEY=VALUE",
                    limits::METADATA_KEY_BYTES_MAX
                )));
            }
            if metadata.iter().any(|(seen, _)| seen == key) {
                return Err(Rejection::invalid(format!("metadata.{key} is given twice")));
            }
            metadata.push((key.clone(), value.clone()));
        }
        let order = match given(self.order.as_deref()) {
            None | Some("desc") => SortOrder::Descending,
            Some("asc") => SortOrder::Ascending,
            Some(other) => {
                return Err(Rejection::invalid(format!("order '{other}' is not asc or desc")));
            }
        };
        let cursor = given(self.cursor.as_deref())
            .map(|cursor| {
                cursor.parse::<u64>().map_err(|_| {
                    Rejection::invalid(format!(
                        "cursor '{cursor}' is not one a transfer search answered"
                    ))
                })
            })
            .transpose()?;
        Ok(TransferQuery {
            tenant: tenant.clone(),
            account,
            idempotency_key,
            committed,
            effective,
            kind,
            status,
            currency,
            amount_min,
            amount_max,
            metadata,
            order,
            cursor,
            limit: page_size(self.limit),
        })
    }
}

/// What every surface answers: the transfers and, while more may follow, the cursor of the
/// next page as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferPage {
    pub transfers: Vec<Transfer>,
    pub next_cursor: Option<String>,
    /// With `include=entries`: the entries of these transfers, in commit order.
    pub entries: Option<Vec<StoredEntry>>,
}

impl Intake {
    /// One page of the caller's tenant's transfers that match `input`. A key bound to a user
    /// searches only through one of that user's accounts (`account=`), and sees nothing of
    /// an account that is not its user's.
    pub async fn search_transfers(
        &self,
        caller: &Principal,
        input: &SearchInput,
    ) -> Result<TransferPage, Rejection> {
        let query = input.query(&caller.tenant)?;
        let with_entries = match given(input.include.as_deref()) {
            None => false,
            Some("entries") => true,
            Some(other) => {
                return Err(Rejection::invalid(format!(
                    "include '{other}' is not known; a search includes only entries"
                )));
            }
        };
        match &query.account {
            None => caller.refuse_bound("search transfers without naming one of its accounts")?,
            Some(account) if caller.user.is_some() => {
                if self.account_seen(caller, account).await?.is_none() {
                    let entries = with_entries.then(Vec::new);
                    return Ok(TransferPage { transfers: Vec::new(), next_cursor: None, entries });
                }
            }
            Some(_) => {}
        }
        let Page { items, next_cursor } =
            self.store().search_transfers(&query).await.map_err(unavailable)?;
        let entries = if with_entries {
            let ids: Vec<_> = items.iter().map(|transfer| transfer.id).collect();
            let mut entries = self.store().transfer_entries(&ids).await.map_err(unavailable)?;
            // An entry carries its account's balance after it: a key bound to a user sees the
            // entries of the account it searched (its user's), not the other side's.
            if caller.user.is_some() {
                entries.retain(|stored| query.account.as_ref() == Some(&stored.entry.account_id));
            }
            Some(entries)
        } else {
            None
        };
        Ok(TransferPage {
            transfers: items,
            next_cursor: next_cursor.map(|c| c.to_string()),
            entries,
        })
    }
}

/// The names `from_pairs` knows, for its refusal.
const FILTER_NAMES: &str = "account, idempotency_key, after, before, effective_after, \
     effective_before, kind, status, currency, min_amount, max_amount, metadata.KEY, order, \
     limit, cursor and include";

fn twice(name: &str) -> Rejection {
    Rejection::invalid(format!("{name} is given twice"))
}

fn statuses() -> String {
    TransferStatus::ALL.iter().map(|status| status.as_str()).collect::<Vec<_>>().join(", ")
}

fn kinds() -> String {
    TransferKind::ALL.iter().map(|kind| kind.as_str()).collect::<Vec<_>>().join(", ")
}

fn range(from: Option<Timestamp>, until: Option<Timestamp>) -> Result<TimeRange, Rejection> {
    if let (Some(from), Some(until)) = (from, until)
        && from > until
    {
        return Err(Rejection::invalid("a search's time range ends before it starts"));
    }
    Ok(TimeRange { from, until })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(query: &str) -> Result<TransferQuery, Rejection> {
        let pairs: Vec<(String, String)> = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                (name.to_owned(), value.to_owned())
            })
            .collect();
        let input = SearchInput::from_pairs(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())))?;
        input.query(&Tenant::parse("acme").expect("tenant"))
    }

    #[test]
    fn every_filter_is_read_into_the_callers_tenant() {
        let query = read(
            "account=alice&after=2026-01-01T00:00:00Z&before=2026-02-01T00:00:00Z&kind=deposit\
             &status=posted&currency=USD&min_amount=1.50&max_amount=20&metadata.order=o-1\
             &order=asc&limit=5000&cursor=42",
        )
        .expect("reads");
        let acme = Tenant::parse("acme").expect("tenant");
        assert_eq!(query.account, Some(AccountId::parse("alice").expect("id").in_tenant(&acme)));
        assert_eq!(query.kind, Some(TransferKind::Deposit));
        assert_eq!(query.status, Some(TransferStatus::Posted));
        assert_eq!((query.amount_min, query.amount_max), (Some(150), Some(2_000)));
        assert_eq!(query.metadata, vec![("order".to_owned(), "o-1".to_owned())]);
        assert_eq!(query.order, SortOrder::Ascending);
        assert_eq!(query.limit, limits::PAGE_SIZE_MAX, "a limit above the maximum is cut");
        assert_eq!(query.cursor, Some(42));
        assert!(query.committed.from.is_some() && query.committed.until.is_some());
        let plain = read("").expect("no filter");
        assert_eq!((plain.order, plain.limit), (SortOrder::Descending, 100));
    }

    #[test]
    fn a_search_it_cannot_read_is_refused_with_the_reason() {
        for (query, said) in [
            ("acount=alice", "unknown filter 'acount'"),
            ("kind=deposit&kind=payment", "kind is given twice"),
            ("metadata.a=1&metadata.a=2", "metadata.a is given twice"),
            ("metadata.=1", "metadata filter names a key"),
            ("min_amount=5", "min_amount needs currency"),
            ("currency=USD&min_amount=5&max_amount=1", "more than max_amount"),
            ("after=2026-02-01T00:00:00Z&before=2026-01-01T00:00:00Z", "ends before it starts"),
            ("after=yesterday", "after:"),
            ("kind=gift", "kind 'gift' is not one of transfer, deposit"),
            ("status=done", "status 'done'"),
            ("order=up", "order 'up'"),
            ("limit=ten", "limit 'ten'"),
            ("cursor=abc", "cursor 'abc'"),
        ] {
            let refusal = read(query).expect_err(query);
            assert!(refusal.message.contains(said), "{query}: {}", refusal.message);
        }
    }
}
