//! The auditor: a deliberately naive in-memory ledger, written apart from `kopek-core`, that
//! predicts the verdict of every simulated request. Any disagreement with the real write
//! path is a bug in one of them.

use kopek_core::ErrorCode;
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leg {
    pub debit: String,
    pub credit: String,
    pub amount: i64,
    pub currency: &'static str,
}

/// One simulated request. Keys are the idempotency keys the sim sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Deposit { key: String, account: String, amount: i64, currency: &'static str },
    Post { key: String, leg: Leg },
    Hold { key: String, leg: Leg },
    Capture { key: String, hold_key: String, amount: Option<i64> },
    Void { key: String, hold_key: String },
    Linked { keys: Vec<String>, legs: Vec<Leg> },
    Freeze { account: String, frozen: bool },
}

/// What the auditor expects for one transfer of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Recorded and applied: `true` for a hold left pending.
    Applied { pending: bool },
    /// Recorded as declined with this code.
    Declined(ErrorCode),
    /// Refused without a record.
    Rejected(ErrorCode),
    /// The key was seen with the same request: this earlier verdict again.
    Replay(Box<Verdict>),
}

#[derive(Clone, Debug)]
pub struct AuditAccount {
    pub currency: &'static str,
    pub limit: Option<i64>,
    pub posted: i64,
    pub held_out: i64,
    pub held_in: i64,
    pub frozen: bool,
}

#[derive(Clone, Debug)]
struct AuditHold {
    leg: Leg,
    resolved: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Auditor {
    pub accounts: BTreeMap<String, AuditAccount>,
    /// Key -> (the request part it was used with, the verdict it got).
    keys: BTreeMap<String, (String, Verdict)>,
    holds: BTreeMap<String, AuditHold>,
}

impl Auditor {
    pub fn open(&mut self, id: &str, currency: &'static str, limit: Option<i64>) {
        let account =
            AuditAccount { currency, limit, posted: 0, held_out: 0, held_in: 0, frozen: false };
        self.accounts.insert(id.to_owned(), account);
    }

    fn ensure_world(&mut self, currency: &'static str) -> String {
        let world = format!("world:{currency}");
        if !self.accounts.contains_key(&world) {
            self.open(&world, currency, None);
        }
        world
    }

    /// Predicts and applies one request; one verdict per transfer in it.
    pub fn apply(&mut self, op: &Op) -> Vec<Verdict> {
        match op {
            Op::Deposit { key, account, amount, currency } => {
                let leg = Leg {
                    debit: format!("world:{currency}"),
                    credit: account.clone(),
                    amount: *amount,
                    currency,
                };
                vec![self.once(key, &format!("deposit {leg:?}"), |auditor| {
                    auditor.movement(&leg, false, true)
                })]
            }
            Op::Post { key, leg } => vec![self.once(key, &format!("post {leg:?}"), |auditor| {
                auditor.movement(leg, false, false)
            })],
            Op::Hold { key, leg } => {
                let verdict = self.once(key, &format!("hold {leg:?}"), |auditor| {
                    auditor.movement(leg, true, false)
                });
                if verdict == (Verdict::Applied { pending: true }) {
                    // Captures and voids name holds by the key they were placed with.
                    self.holds.insert(key.clone(), AuditHold { leg: leg.clone(), resolved: false });
                }
                vec![verdict]
            }
            Op::Capture { key, hold_key, amount } => {
                vec![self.once(key, &format!("capture {hold_key} {amount:?}"), |auditor| {
                    auditor.capture(hold_key, *amount)
                })]
            }
            Op::Void { key, hold_key } => {
                vec![self.once(key, &format!("void {hold_key}"), |auditor| auditor.void(hold_key))]
            }
            Op::Linked { keys, legs } => self.linked(keys, legs),
            Op::Freeze { account, frozen } => {
                if let Some(account) = self.accounts.get_mut(account) {
                    account.frozen = *frozen;
                }
                Vec::new()
            }
        }
    }

    fn once(
        &mut self,
        key: &str,
        request: &str,
        decide: impl FnOnce(&mut Auditor) -> Verdict,
    ) -> Verdict {
        if let Some((known, verdict)) = self.keys.get(key) {
            return if known == request {
                Verdict::Replay(Box::new(verdict.clone()))
            } else {
                Verdict::Rejected(ErrorCode::IdempotencyKeyReused)
            };
        }
        let verdict = decide(self);
        self.keys.insert(key.to_owned(), (request.to_owned(), verdict.clone()));
        verdict
    }

    fn check(&self, leg: &Leg, deposit: bool) -> Result<(), ErrorCode> {
        if leg.debit == leg.credit {
            return Err(ErrorCode::SameAccount);
        }
        let world = format!("world:{}", leg.currency);
        let find = |id: &String| -> Option<AuditAccount> {
            match self.accounts.get(id) {
                Some(account) => Some(account.clone()),
                None if deposit && *id == world => Some(AuditAccount {
                    currency: leg.currency,
                    limit: None,
                    posted: 0,
                    held_out: 0,
                    held_in: 0,
                    frozen: false,
                }),
                None => None,
            }
        };
        let debit = find(&leg.debit).ok_or(ErrorCode::AccountNotFound)?;
        let credit = find(&leg.credit).ok_or(ErrorCode::AccountNotFound)?;
        if debit.currency != leg.currency || credit.currency != leg.currency {
            return Err(ErrorCode::CurrencyMismatch);
        }
        if debit.frozen || credit.frozen {
            return Err(ErrorCode::AccountFrozen);
        }
        if let Some(limit) = debit.limit
            && debit.posted - debit.held_out + limit < leg.amount
        {
            return Err(ErrorCode::InsufficientFunds);
        }
        Ok(())
    }

    fn movement(&mut self, leg: &Leg, hold: bool, deposit: bool) -> Verdict {
        if let Err(code) = self.check(leg, deposit) {
            return Verdict::Declined(code);
        }
        if deposit {
            self.ensure_world(leg.currency);
        }
        self.book(leg, hold);
        Verdict::Applied { pending: hold }
    }

    fn book(&mut self, leg: &Leg, hold: bool) {
        if hold {
            if let Some(debit) = self.accounts.get_mut(&leg.debit) {
                debit.held_out += leg.amount;
            }
            if let Some(credit) = self.accounts.get_mut(&leg.credit) {
                credit.held_in += leg.amount;
            }
        } else {
            if let Some(debit) = self.accounts.get_mut(&leg.debit) {
                debit.posted -= leg.amount;
            }
            if let Some(credit) = self.accounts.get_mut(&leg.credit) {
                credit.posted += leg.amount;
            }
        }
    }

    fn pending(&self, hold_key: &str) -> Result<AuditHold, ErrorCode> {
        let hold = self.holds.get(hold_key).ok_or(ErrorCode::PendingNotFound)?;
        if hold.resolved {
            return Err(ErrorCode::PendingAlreadyResolved);
        }
        Ok(hold.clone())
    }

    fn capture(&mut self, hold_key: &str, amount: Option<i64>) -> Verdict {
        let hold = match self.pending(hold_key) {
            Ok(hold) => hold,
            Err(code) => return Verdict::Declined(code),
        };
        let captured = amount.unwrap_or(hold.leg.amount);
        if captured > hold.leg.amount {
            return Verdict::Declined(ErrorCode::InvalidAmount);
        }
        let frozen = |id: &str| self.accounts.get(id).is_some_and(|account| account.frozen);
        if frozen(&hold.leg.debit) || frozen(&hold.leg.credit) {
            return Verdict::Declined(ErrorCode::AccountFrozen);
        }
        self.release(hold_key, &hold.leg);
        self.book(&Leg { amount: captured, ..hold.leg }, false);
        Verdict::Applied { pending: false }
    }

    fn void(&mut self, hold_key: &str) -> Verdict {
        match self.pending(hold_key) {
            Ok(hold) => {
                self.release(hold_key, &hold.leg);
                Verdict::Applied { pending: false }
            }
            Err(code) => Verdict::Declined(code),
        }
    }

    fn release(&mut self, hold_key: &str, leg: &Leg) {
        if let Some(hold) = self.holds.get_mut(hold_key) {
            hold.resolved = true;
        }
        if let Some(debit) = self.accounts.get_mut(&leg.debit) {
            debit.held_out -= leg.amount;
        }
        if let Some(credit) = self.accounts.get_mut(&leg.credit) {
            credit.held_in -= leg.amount;
        }
    }

    fn linked(&mut self, keys: &[String], legs: &[Leg]) -> Vec<Verdict> {
        let requests: Vec<String> = legs.iter().map(|leg| format!("post {leg:?}")).collect();
        let known: Vec<_> = keys.iter().map(|key| self.keys.get(key).cloned()).collect();
        if known.iter().any(Option::is_some) {
            let all_same = known
                .iter()
                .zip(&requests)
                .all(|(known, request)| matches!(known, Some((r, _)) if r == request));
            if all_same {
                return known
                    .into_iter()
                    .flatten()
                    .map(|(_, verdict)| Verdict::Replay(Box::new(verdict)))
                    .collect();
            }
            let culprit = known
                .iter()
                .zip(&requests)
                .position(|(known, request)| !matches!(known, Some((r, _)) if r == request))
                .unwrap_or(0);
            return (0..keys.len())
                .map(|index| {
                    Verdict::Rejected(if index == culprit {
                        ErrorCode::IdempotencyKeyReused
                    } else {
                        ErrorCode::LinkedEventFailed
                    })
                })
                .collect();
        }
        let mut trial = self.clone();
        let mut failure = None;
        for (index, leg) in legs.iter().enumerate() {
            if let Err(code) = trial.check(leg, false) {
                failure = Some((index, code));
                break;
            }
            trial.book(leg, false);
        }
        let verdicts: Vec<Verdict> = match failure {
            None => {
                *self = trial;
                legs.iter().map(|_| Verdict::Applied { pending: false }).collect()
            }
            Some((culprit, code)) => (0..legs.len())
                .map(|index| {
                    Verdict::Declined(if index == culprit {
                        code
                    } else {
                        ErrorCode::LinkedEventFailed
                    })
                })
                .collect(),
        };
        for ((key, request), verdict) in keys.iter().zip(requests).zip(&verdicts) {
            self.keys.insert(key.clone(), (request, verdict.clone()));
        }
        verdicts
    }
}
