//! Table tests of `apply`: each case is a small script, run through one `check` helper whose
//! output is a snapshot (`UPDATE_EXPECT=1 cargo test -p kopek-core` refreshes them).
//!
//! Script lines, one batch each, one second apart:
//! - `account ID CUR [limit=MINOR] [system] [unbounded] [owner=O]`
//! - `deposit KEY ACCOUNT AMOUNT [CUR] [opens=ID]` / `withdraw KEY ACCOUNT AMOUNT [CUR]`
//! - `transfer KEY DEBIT->CREDIT AMOUNT [CUR] [kind=K] [hold] [timeout=S] [opens=ID]`
//! - `capture KEY HOLD_KEY [AMOUNT]` / `void KEY HOLD_KEY`
//! - `linked KEY DEBIT->CREDIT AMOUNT; KEY DEBIT->CREDIT AMOUNT; ...`
//! - `freeze|unfreeze|close ID`, `limit ID MINOR`, `wait SECONDS`, `expire`
//! - `user NAME [ID]`, `order ID USER AMOUNT`, `pay ID USER AMOUNT`, `force ID POSTED_MINOR`
//! - `tenant NAME`: the lines after it are sent in that tenant
//! - `as client LINE`, `as user:USER LINE`: the line sent with a key's authority instead of the
//!   ledger's own (`Authority::Client`, `Authority::User`)

use expect_test::{Expect, expect};
use kopek_core::memory::{MemoryLedger, SequentialIds};
use kopek_core::*;
use std::fmt::Write;

struct Script {
    ledger: MemoryLedger,
    ids: SequentialIds,
    now: Timestamp,
    tenant: Tenant,
    out: String,
}

fn usd() -> Currency {
    Currency::parse("USD").expect("USD")
}

impl Script {
    fn new() -> Script {
        Script {
            ledger: MemoryLedger::default(),
            ids: SequentialIds::default(),
            now: Timestamp::from_unix_micros(1_700_000_000_000_000),
            tenant: Tenant::default_tenant(),
            out: String::new(),
        }
    }

    fn run_line(&mut self, line: &str) {
        let (authority, command) = match line.strip_prefix("as ") {
            None => (Authority::Ledger, line),
            Some(rest) => {
                let (who, command) = rest.split_once(' ').expect("as WHO LINE");
                let authority = match who.strip_prefix("user:") {
                    Some(user) => Authority::User(UserId::parse(user).expect("user id")),
                    None if who == "client" => Authority::Client,
                    None => panic!("unknown authority {who}"),
                };
                (authority, command)
            }
        };
        self.run_command(line, authority, command);
    }

    fn run_command(&mut self, line: &str, authority: Authority, command: &str) {
        let line_as_sent = line;
        let line = command;
        let words: Vec<&str> = line.split_whitespace().collect();
        let body = match words[0] {
            "account" => CommandBody::CreateAccounts(vec![self.new_account(&words[1..])]),
            "deposit" | "withdraw" => {
                let account = id(words[2]);
                let options = &words[4..];
                let code = options.iter().copied().find(|word| word.len() == 3);
                let (currency, amount) = self.money(words[3], &account, code);
                let opens = options
                    .iter()
                    .filter_map(|word| word.strip_prefix("opens="))
                    .map(|name| NewAccount::user(id(name), currency))
                    .collect();
                let world = AccountId::world_in(&self.tenant, currency);
                let (kind, debit, credit) = if words[0] == "deposit" {
                    (TransferKind::Deposit, world, account)
                } else {
                    (TransferKind::Withdrawal, account, world)
                };
                let request = request(words[1], kind, debit, credit, amount, currency, None);
                transfers(
                    vec![TransferRequest { open_if_missing: opens, ..request }],
                    Linking::Independent,
                )
            }
            "transfer" => transfers(vec![self.transfer(&words[1..])], Linking::Independent),
            "linked" => {
                let parts = line["linked".len()..].split(';');
                let requests = parts
                    .map(|part| self.transfer(&part.split_whitespace().collect::<Vec<_>>()))
                    .collect();
                transfers(requests, Linking::Linked)
            }
            "capture" | "void" => {
                let pending_id = self.hold_id(words[2]);
                let movement = if words[0] == "void" {
                    Movement::Void { pending_id }
                } else {
                    let amount =
                        words.get(3).map(|text| Amount::parse_major(text, usd()).expect("amount"));
                    Movement::Capture { pending_id, amount }
                };
                let key = IdempotencyKey::parse(words[1]).expect("key");
                let request = TransferRequest {
                    idempotency_key: key,
                    kind: TransferKind::Transfer,
                    movement,
                    details: Details::default(),
                    effective_at: None,
                    open_if_missing: Vec::new(),
                    fingerprint_extra: String::new(),
                };
                transfers(vec![request], Linking::Independent)
            }
            "freeze" | "unfreeze" | "close" => {
                let status = match words[0] {
                    "freeze" => AccountStatus::Frozen,
                    "unfreeze" => AccountStatus::Active,
                    _ => AccountStatus::Closed,
                };
                CommandBody::UpdateAccount(AccountUpdate {
                    id: id(words[1]),
                    overdraft: None,
                    status: Some(status),
                })
            }
            "limit" => {
                let limit = Overdraft::limited(words[2].parse().expect("limit")).expect("limit");
                CommandBody::UpdateAccount(AccountUpdate {
                    id: id(words[1]),
                    overdraft: Some(limit),
                    status: None,
                })
            }
            "user" => CommandBody::CreateUser(NewUser {
                id: words.get(2).map(|text| UserId::parse(text).expect("user id")),
                name: words[1].to_owned(),
                currency: usd(),
            }),
            "order" | "pay" => {
                let order = NewOrder {
                    id: OrderId::parse(words[1]).expect("order id"),
                    user: UserId::parse(words[2]).expect("user id"),
                    amount: kopek_core::money::parse_decimal_minor(words[3], 2).expect("amount"),
                    currency: usd(),
                };
                if words[0] == "order" {
                    CommandBody::CreateOrder(order)
                } else {
                    CommandBody::PayOrder(order)
                }
            }
            "force" => {
                // Sets a balance directly, to reach the edges of the 64-bit range in a table.
                let account = self.ledger.accounts.get_mut(&id(words[1])).expect("account");
                account.balance.posted = words[2].parse().expect("balance");
                return;
            }
            "tenant" => {
                self.tenant = Tenant::parse(words[1]).expect("tenant");
                return;
            }
            "wait" => {
                let seconds: i64 = words[1].parse().expect("seconds");
                self.now =
                    Timestamp::from_unix_micros(self.now.as_unix_micros() + seconds * 1_000_000);
                return;
            }
            "expire" => {
                let due =
                    self.ledger.transfers.values().filter(|t| t.status == TransferStatus::Pending);
                CommandBody::ExpireHolds(due.map(|t| t.id).collect())
            }
            other => panic!("unknown script word {other}"),
        };
        self.now = Timestamp::from_unix_micros(self.now.as_unix_micros() + 1_000_000);
        let batch = Batch { commands: vec![Command::new(self.tenant.clone(), authority, body)] };
        let outcome = self.ledger.execute(&batch, self.now, &mut self.ids);
        writeln!(self.out, "{line_as_sent}").expect("write");
        for result in &outcome.results {
            self.describe(result);
        }
    }

    fn new_account(&self, words: &[&str]) -> NewAccount {
        let mut account =
            NewAccount::user(id(words[0]), Currency::parse(words[1]).expect("currency"));
        for word in &words[2..] {
            match word.split_once('=') {
                Some(("limit", minor)) => {
                    account.overdraft =
                        Overdraft::limited(minor.parse().expect("minor")).expect("limit")
                }
                Some(("owner", owner)) => account.owner = Some(owner.to_string()),
                None if *word == "system" => account.kind = AccountKind::System,
                None if *word == "unbounded" => account.overdraft = Overdraft::Unbounded,
                _ => panic!("unknown account option {word}"),
            }
        }
        account
    }

    /// `KEY DEBIT->CREDIT AMOUNT [CUR] [kind=K] [hold] [timeout=S]`
    fn transfer(&self, words: &[&str]) -> TransferRequest {
        let (debit, credit) = words[1].split_once("->").expect("DEBIT->CREDIT");
        let currency_word = words
            .get(3)
            .copied()
            .filter(|word| word.len() == 3 && word.chars().all(|c| c.is_ascii_uppercase()));
        let (currency, amount) = self.money(words[2], &id(debit), currency_word);
        let mut kind = TransferKind::Transfer;
        let mut hold = None;
        let mut opens = Vec::new();
        for word in &words[3..] {
            match word.split_once('=') {
                Some(("kind", name)) => kind = TransferKind::parse(name).expect("kind"),
                Some(("opens", account)) => opens.push(NewAccount::user(id(account), currency)),
                Some(("timeout", seconds)) => {
                    hold = Some(Hold { timeout_seconds: Some(seconds.parse().expect("seconds")) })
                }
                None if *word == "hold" => hold = Some(Hold { timeout_seconds: None }),
                _ if Some(*word) == currency_word => {}
                _ => panic!("unknown transfer option {word}"),
            }
        }
        TransferRequest {
            open_if_missing: opens,
            fingerprint_extra: String::new(),
            ..request(words[0], kind, id(debit), id(credit), amount, currency, hold)
        }
    }

    /// The amount in the given currency, else in the account's, else in USD.
    fn money(&self, text: &str, account: &AccountId, currency: Option<&str>) -> (Currency, i64) {
        let currency = match currency {
            Some(code) => Currency::parse(code).expect("currency"),
            None => self.ledger.accounts.get(account).map_or(usd(), |account| account.currency),
        };
        // Zero and negative amounts are allowed here: apply must decline them itself.
        let (sign, digits) = text.strip_prefix('-').map_or((1, text), |rest| (-1, rest));
        let minor = kopek_core::money::parse_decimal_minor(digits, currency.minor_digits())
            .expect("amount");
        (currency, sign * minor)
    }

    fn hold_id(&self, key: &str) -> TransferId {
        let key = IdempotencyKey::parse(key).expect("key");
        match self.ledger.transfer_by_key(&self.tenant, &key) {
            Some(transfer) => transfer.id,
            None => TransferId(Ulid::from_u128(999_999)),
        }
    }

    fn describe(&mut self, result: &CommandResult) {
        match result {
            CommandResult::Accounts(results) => {
                results.iter().for_each(|result| self.describe_account(result))
            }
            CommandResult::Account(result) => self.describe_account(result),
            CommandResult::Transfers(results) => {
                for result in results {
                    let line = match result {
                        TransferResult::Committed(t) => format!("  {}", transfer_line(t)),
                        TransferResult::Replayed(t) => format!("  replayed {}", transfer_line(t)),
                        TransferResult::Rejected(rejection) => format!("  rejected {rejection}"),
                    };
                    writeln!(self.out, "{line}").expect("write");
                }
            }
            CommandResult::Expired(ids) => {
                writeln!(self.out, "  expired {}", ids.len()).expect("write")
            }
            CommandResult::User(result) => {
                let line = match result {
                    UserResult::Created(user, account) => {
                        format!("  created user {} ({}) with {}", user.id, user.name, account.id)
                    }
                    UserResult::Existed(user) => format!("  existed user {}", user.id),
                    UserResult::Rejected(rejection) => format!("  rejected {rejection}"),
                };
                writeln!(self.out, "{line}").expect("write");
            }
            CommandResult::Order(result) => {
                let describe = |order: &Order| {
                    let failure =
                        order.failure.as_ref().map(|r| format!(" {r}")).unwrap_or_default();
                    format!("{} {} {}{failure}", order.id, order.status.as_str(), order.amount)
                };
                let line = match result {
                    OrderResult::Created(order) => format!("  created order {}", describe(order)),
                    OrderResult::Existed(order) => format!("  existed order {}", describe(order)),
                    OrderResult::Settled(order) => format!("  settled order {}", describe(order)),
                    OrderResult::Rejected(rejection) => format!("  rejected {rejection}"),
                };
                writeln!(self.out, "{line}").expect("write");
            }
            // The scripts set no rates and take no quotes: tests/fx.rs covers them.
            CommandResult::Rates(_) | CommandResult::Quote(_) => {
                unreachable!("scripts set no rates and take no quotes")
            }
        }
    }

    fn describe_account(&mut self, result: &AccountResult) {
        let line = match result {
            AccountResult::Created(account) => format!("  created {}", account.id),
            AccountResult::Existed(account) => format!("  existed {}", account.id),
            AccountResult::Updated(account) => {
                format!("  updated {} {}", account.id, account.status.as_str())
            }
            AccountResult::Rejected(rejection) => format!("  rejected {rejection}"),
        };
        writeln!(self.out, "{line}").expect("write");
    }

    fn summary(&mut self) -> String {
        let mut out = std::mem::take(&mut self.out);
        out.push_str("--\n");
        for account in self.ledger.accounts.values() {
            let b = account.balance;
            let pending = if b.pending_out != 0 || b.pending_in != 0 {
                format!(" held_out={} held_in={}", b.pending_out, b.pending_in)
            } else {
                String::new()
            };
            writeln!(out, "{} {} posted={}{pending}", account.id, account.currency, b.posted)
                .expect("write");
        }
        let events: Vec<&str> =
            self.ledger.events.iter().map(|event| event.kind.as_str()).collect();
        writeln!(out, "events: {}", events.join(" ")).expect("write");
        out
    }
}

fn transfer_line(t: &Transfer) -> String {
    let error = t.error.as_ref().map(|rejection| format!(" {rejection}")).unwrap_or_default();
    format!("{} {} {}{error}", t.action.as_str(), t.status.as_str(), t.amount)
}

fn id(text: &str) -> AccountId {
    AccountId::parse(text).expect("account id")
}

fn request(
    key: &str,
    kind: TransferKind,
    debit: AccountId,
    credit: AccountId,
    amount: i64,
    currency: Currency,
    hold: Option<Hold>,
) -> TransferRequest {
    TransferRequest {
        idempotency_key: IdempotencyKey::parse(key).expect("key"),
        kind,
        movement: Movement::Move {
            debit_account: debit,
            credit_account: credit,
            amount,
            currency,
            hold,
        },
        details: Details::default(),
        effective_at: None,
        open_if_missing: Vec::new(),
        fingerprint_extra: String::new(),
    }
}

fn transfers(transfers: Vec<TransferRequest>, linking: Linking) -> CommandBody {
    CommandBody::CreateTransfers { transfers, linking }
}

fn check(script: &str, expect: Expect) {
    let mut runner = Script::new();
    for line in script.lines().map(str::trim).filter(|line| !line.is_empty()) {
        runner.run_line(line);
    }
    expect.assert_eq(&runner.summary());
}

#[test]
fn deposit_transfer_withdraw() {
    check(
        "
        account a USD
        account b USD
        deposit d1 a 100.00
        transfer t1 a->b 30.00 kind=payment
        withdraw w1 b 10.00
        ",
        expect![[r#"
            account a USD
              created a
            account b USD
              created b
            deposit d1 a 100.00
              post posted 10000
            transfer t1 a->b 30.00 kind=payment
              post posted 3000
            withdraw w1 b 10.00
              post posted 1000
            --
            a USD posted=7000
            b USD posted=2000
            world:USD USD posted=-9000
            events: AccountOpened AccountOpened AccountOpened TransferPosted TransferPosted TransferPosted
        "#]],
    );
}

#[test]
fn every_transfer_kind_posts() {
    check(
        "
        account a USD
        account b USD
        deposit d1 a 100
        transfer t1 a->b 1 kind=transfer
        transfer t2 a->b 1 kind=payment
        transfer t3 a->b 1 kind=purchase
        transfer t4 a->b 1 kind=fee
        transfer t5 b->a 1 kind=reversal
        transfer t6 a->b 1 kind=fx_leg
        withdraw w1 a 1
        ",
        expect![[r#"
            account a USD
              created a
            account b USD
              created b
            deposit d1 a 100
              post posted 10000
            transfer t1 a->b 1 kind=transfer
              post posted 100
            transfer t2 a->b 1 kind=payment
              post posted 100
            transfer t3 a->b 1 kind=purchase
              post posted 100
            transfer t4 a->b 1 kind=fee
              post posted 100
            transfer t5 b->a 1 kind=reversal
              post posted 100
            transfer t6 a->b 1 kind=fx_leg
              post posted 100
            withdraw w1 a 1
              post posted 100
            --
            a USD posted=9500
            b USD posted=400
            world:USD USD posted=-9900
            events: AccountOpened AccountOpened AccountOpened TransferPosted TransferPosted TransferPosted TransferPosted TransferPosted TransferPosted TransferPosted TransferPosted
        "#]],
    );
}

#[test]
fn declines_in_documented_order() {
    check(
        "
        account a USD
        account b USD
        account e EUR
        deposit d1 a 10.00
        transfer same a->a 1.00
        transfer nf1 ghost->ghost2 1.00
        transfer nf2 a->ghost 1.00
        transfer cm1 a->e 1.00
        transfer cm2 a->b 1.00 EUR
        transfer poor a->b 50.00
        transfer poor a->b 50.00
        transfer poor a->b 51.00
        transfer bad a->b 1.00 kind=deposit
        transfer zero a->a 0
        transfer zero a->a 0
        transfer minus a->b -5.00
        ",
        expect![[r#"
            account a USD
              created a
            account b USD
              created b
            account e EUR
              created e
            deposit d1 a 10.00
              post posted 1000
            transfer same a->a 1.00
              post declined 100 SAME_ACCOUNT: debit and credit account are both a
            transfer nf1 ghost->ghost2 1.00
              post declined 100 ACCOUNT_NOT_FOUND: account ghost not found
            transfer nf2 a->ghost 1.00
              post declined 100 ACCOUNT_NOT_FOUND: account ghost not found
            transfer cm1 a->e 1.00
              post declined 100 CURRENCY_MISMATCH: account e holds EUR, not USD
            transfer cm2 a->b 1.00 EUR
              post declined 100 CURRENCY_MISMATCH: account a holds USD, not EUR
            transfer poor a->b 50.00
              post declined 5000 INSUFFICIENT_FUNDS: balance 10.00 USD is less than 50.00 USD
            transfer poor a->b 50.00
              replayed post declined 5000 INSUFFICIENT_FUNDS: balance 10.00 USD is less than 50.00 USD
            transfer poor a->b 51.00
              rejected IDEMPOTENCY_KEY_REUSED: idempotency key 'poor' was already used with other parameters
            transfer bad a->b 1.00 kind=deposit
              post declined 100 INVALID_ARGUMENT: a deposit is debited from world:USD
            transfer zero a->a 0
              post declined 0 INVALID_AMOUNT: amount must be positive, got 0 minor units
            transfer zero a->a 0
              replayed post declined 0 INVALID_AMOUNT: amount must be positive, got 0 minor units
            transfer minus a->b -5.00
              post declined -500 INVALID_AMOUNT: amount must be positive, got -500 minor units
            --
            a USD posted=1000
            b USD posted=0
            e EUR posted=0
            world:USD USD posted=-1000
            events: AccountOpened AccountOpened AccountOpened AccountOpened TransferPosted TransferDeclined TransferDeclined TransferDeclined TransferDeclined TransferDeclined TransferDeclined TransferDeclined TransferDeclined TransferDeclined
        "#]],
    );
}

#[test]
fn overdraft_limit_and_status_changes() {
    check(
        "
        account a USD limit=500
        account b USD
        transfer t1 a->b 5.00
        transfer t2 a->b 0.01
        limit a 100
        limit a 1000
        transfer t3 a->b 5.00
        freeze b
        transfer t4 a->b 1.00
        unfreeze b
        close a
        transfer t5 b->a 10.00
        close a
        account z USD
        close z
        transfer t6 b->z 1.00
        unfreeze z
        ",
        expect![[r#"
            account a USD limit=500
              created a
            account b USD
              created b
            transfer t1 a->b 5.00
              post posted 500
            transfer t2 a->b 0.01
              post declined 1 INSUFFICIENT_FUNDS: balance 0.00 USD is less than 0.01 USD
            limit a 100
              rejected INVALID_ARGUMENT: overdraft limit 1.00 USD is below what account a already owes
            limit a 1000
              updated a active
            transfer t3 a->b 5.00
              post posted 500
            freeze b
              updated b frozen
            transfer t4 a->b 1.00
              post declined 100 ACCOUNT_FROZEN: account b is frozen
            unfreeze b
              updated b active
            close a
              rejected ACCOUNT_NOT_EMPTY: account a can be closed only with a zero balance and no holds
            transfer t5 b->a 10.00
              post posted 1000
            close a
              updated a closed
            account z USD
              created z
            close z
              updated z closed
            transfer t6 b->z 1.00
              post declined 100 ACCOUNT_CLOSED: account z is closed
            unfreeze z
              rejected ACCOUNT_CLOSED: account z is closed
            --
            a USD posted=0
            b USD posted=0
            z USD posted=0
            events: AccountOpened AccountOpened TransferPosted TransferDeclined AccountUpdated TransferPosted AccountUpdated TransferDeclined AccountUpdated TransferPosted AccountUpdated AccountOpened AccountUpdated TransferDeclined
        "#]],
    );
}

#[test]
fn accounts_are_idempotent_on_their_id() {
    check(
        "
        account a USD
        account a USD
        account a EUR
        limit a 700
        account a USD
        account world:USD USD
        account world:USD USD system unbounded
        account u USD unbounded
        account s USD system unbounded owner=ops
        ",
        expect![[r#"
            account a USD
              created a
            account a USD
              existed a
            account a EUR
              rejected ACCOUNT_EXISTS: account a already exists with other fields
            limit a 700
              updated a active
            account a USD
              existed a
            account world:USD USD
              rejected INVALID_ARGUMENT: ids starting with 'world:' are reserved for world:<CUR> system accounts
            account world:USD USD system unbounded
              created world:USD
            account u USD unbounded
              rejected INVALID_ARGUMENT: only system accounts may have an unbounded overdraft
            account s USD system unbounded owner=ops
              created s
            --
            a USD posted=0
            s USD posted=0
            world:USD USD posted=0
            events: AccountOpened AccountUpdated AccountOpened AccountOpened
        "#]],
    );
}

#[test]
fn holds_capture_void_and_expire() {
    check(
        "
        account a USD
        account b USD
        deposit d1 a 100
        transfer h1 a->b 60 hold
        transfer t1 a->b 50
        capture c1 h1 20
        transfer h1 a->b 60 hold
        capture c2 h1
        void v1 h1
        transfer h0 a->b 1 timeout=0
        transfer h2 a->b 10 timeout=5
        void v2 h2
        void v2 h2
        transfer h3 a->b 10 timeout=5
        capture c3 h3 11
        wait 10
        capture c4 h3
        expire
        capture c5 nothing
        ",
        expect![[r#"
            account a USD
              created a
            account b USD
              created b
            deposit d1 a 100
              post posted 10000
            transfer h1 a->b 60 hold
              hold pending 6000
            transfer t1 a->b 50
              post declined 5000 INSUFFICIENT_FUNDS: balance 40.00 USD is less than 50.00 USD
            capture c1 h1 20
              capture posted 2000
            transfer h1 a->b 60 hold
              replayed hold pending 6000
            capture c2 h1
              capture declined 6000 PENDING_ALREADY_RESOLVED: hold 00000000000000000000000006 is already captured
            void v1 h1
              void declined 6000 PENDING_ALREADY_RESOLVED: hold 00000000000000000000000006 is already captured
            transfer h0 a->b 1 timeout=0
              rejected INVALID_ARGUMENT: hold timeout must be 1 to 2592000 seconds
            transfer h2 a->b 10 timeout=5
              hold pending 1000
            void v2 h2
              void voided 1000
            void v2 h2
              replayed void voided 1000
            transfer h3 a->b 10 timeout=5
              hold pending 1000
            capture c3 h3 11
              capture declined 1100 INVALID_AMOUNT: capture of 11.00 USD exceeds the held 10.00 USD
            capture c4 h3
              capture declined 1000 PENDING_EXPIRED: hold 0000000000000000000000000M has expired
            expire
              expired 1
            capture c5 nothing
              capture declined 0 PENDING_NOT_FOUND: no hold with id 0000000000000000000000YGHZ
            --
            a USD posted=8000
            b USD posted=2000
            world:USD USD posted=-10000
            events: AccountOpened AccountOpened AccountOpened TransferPosted HoldPlaced TransferDeclined HoldCaptured TransferDeclined TransferDeclined HoldPlaced HoldVoided HoldPlaced TransferDeclined TransferDeclined HoldExpired TransferDeclined
        "#]],
    );
}

#[test]
fn idempotency_replays_and_rejects_reuse() {
    check(
        "
        account a USD
        account b USD
        deposit d1 a 10
        transfer k1 a->b 1
        transfer k1 a->b 1
        transfer k1 a->b 2
        transfer k2 a->b 100
        deposit d2 a 1000
        transfer k2 a->b 100
        ",
        expect![[r#"
            account a USD
              created a
            account b USD
              created b
            deposit d1 a 10
              post posted 1000
            transfer k1 a->b 1
              post posted 100
            transfer k1 a->b 1
              replayed post posted 100
            transfer k1 a->b 2
              rejected IDEMPOTENCY_KEY_REUSED: idempotency key 'k1' was already used with other parameters
            transfer k2 a->b 100
              post declined 10000 INSUFFICIENT_FUNDS: balance 9.00 USD is less than 100.00 USD
            deposit d2 a 1000
              post posted 100000
            transfer k2 a->b 100
              replayed post declined 10000 INSUFFICIENT_FUNDS: balance 9.00 USD is less than 100.00 USD
            --
            a USD posted=100900
            b USD posted=100
            world:USD USD posted=-101000
            events: AccountOpened AccountOpened AccountOpened TransferPosted TransferPosted TransferDeclined TransferPosted
        "#]],
    );
}

#[test]
fn linked_requests_are_all_or_nothing() {
    check(
        "
        account a USD
        account b USD
        account c USD
        deposit d1 a 10
        linked l1 a->b 5; l2 b->c 5
        linked l3 a->b 1; l4 b->c 100; l5 a->c 1
        linked l3 a->b 1; l4 b->c 100; l5 a->c 1
        linked l1 a->b 5; l2 b->c 5
        linked l1 a->b 5; l6 b->c 5
        linked l7 a->b 1; l7 a->b 1
        transfer solo a->b 1
        linked solo a->b 1; l8 b->c 1
        linked l9 a->b 1
        transfer l9 a->b 1
        ",
        expect![[r#"
            account a USD
              created a
            account b USD
              created b
            account c USD
              created c
            deposit d1 a 10
              post posted 1000
            linked l1 a->b 5; l2 b->c 5
              post posted 500
              post posted 500
            linked l3 a->b 1; l4 b->c 100; l5 a->c 1
              post declined 100 LINKED_EVENT_FAILED: the transfer at index 1 of this linked request failed with INSUFFICIENT_FUNDS
              post declined 10000 INSUFFICIENT_FUNDS: balance 1.00 USD is less than 100.00 USD
              post declined 100 LINKED_EVENT_FAILED: the transfer at index 1 of this linked request failed with INSUFFICIENT_FUNDS
            linked l3 a->b 1; l4 b->c 100; l5 a->c 1
              replayed post declined 100 LINKED_EVENT_FAILED: the transfer at index 1 of this linked request failed with INSUFFICIENT_FUNDS
              replayed post declined 10000 INSUFFICIENT_FUNDS: balance 1.00 USD is less than 100.00 USD
              replayed post declined 100 LINKED_EVENT_FAILED: the transfer at index 1 of this linked request failed with INSUFFICIENT_FUNDS
            linked l1 a->b 5; l2 b->c 5
              replayed post posted 500
              replayed post posted 500
            linked l1 a->b 5; l6 b->c 5
              rejected LINKED_EVENT_FAILED: the transfer at index 1 of this linked request failed with IDEMPOTENCY_KEY_REUSED
              rejected IDEMPOTENCY_KEY_REUSED: other keys of this linked request were already used by another request
            linked l7 a->b 1; l7 a->b 1
              rejected LINKED_EVENT_FAILED: the transfer at index 1 of this linked request failed with INVALID_ARGUMENT
              rejected INVALID_ARGUMENT: an idempotency key appears twice in one linked request
            transfer solo a->b 1
              post posted 100
            linked solo a->b 1; l8 b->c 1
              rejected IDEMPOTENCY_KEY_REUSED: idempotency key 'solo' was already used with other parameters
              rejected LINKED_EVENT_FAILED: the transfer at index 0 of this linked request failed with IDEMPOTENCY_KEY_REUSED
            linked l9 a->b 1
              post posted 100
            transfer l9 a->b 1
              rejected IDEMPOTENCY_KEY_REUSED: idempotency key 'l9' was already used with other parameters
            --
            a USD posted=300
            b USD posted=200
            c USD posted=500
            world:USD USD posted=-1000
            events: AccountOpened AccountOpened AccountOpened AccountOpened TransferPosted TransferPosted TransferPosted TransferDeclined TransferDeclined TransferDeclined TransferPosted TransferPosted
        "#]],
    );
}

#[test]
fn balances_never_overflow() {
    check(
        "
        account a USD system unbounded
        account b USD
        transfer t1 a->b 10000000000000.01
        transfer t2 a->b 10000000000000.00
        force b 9223372036854775000
        transfer t3 a->b 0.01
        transfer t4 a->b 10000.00
        ",
        expect![[r#"
            account a USD system unbounded
              created a
            account b USD
              created b
            transfer t1 a->b 10000000000000.01
              post declined 1000000000000001 INVALID_AMOUNT: amount must be at most 1000000000000000 minor units, got 1000000000000001
            transfer t2 a->b 10000000000000.00
              post posted 1000000000000000
            transfer t3 a->b 0.01
              post posted 1
            transfer t4 a->b 10000.00
              post declined 1000000 BALANCE_OVERFLOW: a balance of account b would overflow
            --
            a USD posted=-1000000000000001
            b USD posted=9223372036854775001
            events: AccountOpened AccountOpened TransferDeclined TransferPosted TransferPosted TransferDeclined
        "#]],
    );
}

#[test]
fn transfers_open_accounts_on_first_use_only_when_they_go_through() {
    check(
        "
        account shop USD system
        deposit d1 user:u1:USD 10 opens=user:u1:USD
        deposit d2 user:u1:USD 5 opens=user:u1:USD
        deposit d3 user:u2:EUR 5 opens=user:u2:USD
        transfer p1 user:u1:USD->shop 20
        transfer p2 user:u2:USD->shop 1 opens=user:u2:USD
        transfer p3 user:u1:USD->ghost 1 opens=other
        ",
        expect![[r#"
            account shop USD system
              created shop
            deposit d1 user:u1:USD 10 opens=user:u1:USD
              post posted 1000
            deposit d2 user:u1:USD 5 opens=user:u1:USD
              post posted 500
            deposit d3 user:u2:EUR 5 opens=user:u2:USD
              rejected INVALID_ARGUMENT: a transfer cannot open account user:u2:USD
            transfer p1 user:u1:USD->shop 20
              post declined 2000 INSUFFICIENT_FUNDS: balance 15.00 USD is less than 20.00 USD
            transfer p2 user:u2:USD->shop 1 opens=user:u2:USD
              post declined 100 INSUFFICIENT_FUNDS: balance 0.00 USD is less than 1.00 USD
            transfer p3 user:u1:USD->ghost 1 opens=other
              rejected INVALID_ARGUMENT: a transfer cannot open account other
            --
            shop USD posted=0
            user:u1:USD USD posted=1500
            world:USD USD posted=-1500
            events: AccountOpened AccountOpened AccountOpened TransferPosted TransferPosted TransferDeclined TransferDeclined
        "#]],
    );
}

#[test]
fn users_get_numbers_and_orders_are_paid_once() {
    check(
        "
        user petya
        user vasya
        user alice alice-1
        user alice alice-1
        user other alice-1
        user bad 7
        deposit d1 user:1:USD 5.00
        order o1 1 2.00
        order o1 1 2.00
        order o1 1 3.00
        order o2 2 1.00
        pay o1 1 2.00
        pay o1 1 2.00
        pay o2 2 1.00
        pay o3 1 1.00
        order o4 1 0
        ",
        expect![[r#"
            user petya
              created user 1 (petya) with user:1:USD
            user vasya
              created user 2 (vasya) with user:2:USD
            user alice alice-1
              created user alice-1 (alice) with user:alice-1:USD
            user alice alice-1
              existed user alice-1
            user other alice-1
              rejected ACCOUNT_EXISTS: user alice-1 already exists with another name
            user bad 7
              rejected INVALID_ARGUMENT: all-digit user ids are allocated by the server
            deposit d1 user:1:USD 5.00
              post posted 500
            order o1 1 2.00
              created order o1 PENDING 200
            order o1 1 2.00
              existed order o1 PENDING 200
            order o1 1 3.00
              rejected IDEMPOTENCY_KEY_REUSED: order o1 already exists with other fields
            order o2 2 1.00
              created order o2 PENDING 100
            pay o1 1 2.00
              settled order o1 PAID 200
            pay o1 1 2.00
              settled order o1 PAID 200
            pay o2 2 1.00
              settled order o2 FAILED 100 INSUFFICIENT_FUNDS: balance 0.00 USD is less than 1.00 USD
            pay o3 1 1.00
              rejected INVALID_ARGUMENT: no order o3
            order o4 1 0
              rejected INVALID_AMOUNT: an order amount must be positive
            --
            orders:USD USD posted=200
            user:1:USD USD posted=300
            user:2:USD USD posted=0
            user:alice-1:USD USD posted=0
            world:USD USD posted=-500
            events: AccountOpened UserCreated AccountOpened UserCreated AccountOpened UserCreated AccountOpened TransferPosted OrderCreated OrderCreated AccountOpened TransferPosted PaymentCompleted OrderPaid TransferDeclined PaymentFailed OrderFailed
        "#]],
    );
}

#[test]
fn an_allocated_user_adopts_an_account_another_surface_opened() {
    check(
        "
        deposit d1 user:1:USD 5.00 opens=user:1:USD
        user first
        ",
        expect![[r#"
            deposit d1 user:1:USD 5.00 opens=user:1:USD
              post posted 500
            user first
              created user 1 (first) with user:1:USD
            --
            user:1:USD USD posted=500
            world:USD USD posted=-500
            events: AccountOpened AccountOpened TransferPosted UserCreated
        "#]],
    );
}

/// Regression for issue 19, finding 1: a key that is not an admin's cannot give itself credit
/// (an overdraft limit, or a system account, which may be unbounded), and a key bound to a
/// user opens, moves and resolves only that user's things. Refusals record nothing.
#[test]
fn authorities_limit_what_keys_open_and_move() {
    check(
        "
        account alice USD owner=u1
        account bob USD owner=u2
        deposit d1 alice 100
        deposit d2 bob 100
        as client account od1 USD limit=100000000
        as client account sys USD system unbounded
        as user:u1 account od2 USD limit=100 owner=u1
        as user:u1 account mine USD owner=u2
        as user:u1 account mine USD owner=u1
        as client account plain USD
        as user:u1 transfer t1 bob->alice 10
        as user:u1 deposit t2 alice 10
        as user:u1 transfer t3 alice->bob 10
        transfer h1 bob->alice 5 hold
        as user:u1 void v1 h1
        as user:u2 void v1 h1
        as user:u1 transfer d2 alice->bob 100
        as user:u1 linked l1 alice->bob 1; l2 bob->alice 1
        as client limit alice 500
        as client freeze bob
        as user:u1 user carol
        as user:u1 order o1 u2 1.00
        as user:u1 order o1 u1 1.00
        as client transfer t4 bob->alice 1
        ",
        expect![[r#"
            account alice USD owner=u1
              created alice
            account bob USD owner=u2
              created bob
            deposit d1 alice 100
              post posted 10000
            deposit d2 bob 100
              post posted 10000
            as client account od1 USD limit=100000000
              rejected PERMISSION_DENIED: only an admin key sets an overdraft limit
            as client account sys USD system unbounded
              rejected PERMISSION_DENIED: only an admin key opens system accounts
            as user:u1 account od2 USD limit=100 owner=u1
              rejected PERMISSION_DENIED: only an admin key sets an overdraft limit
            as user:u1 account mine USD owner=u2
              rejected PERMISSION_DENIED: a key bound to a user opens accounts only for that user
            as user:u1 account mine USD owner=u1
              created mine
            as client account plain USD
              created plain
            as user:u1 transfer t1 bob->alice 10
              rejected ACCOUNT_NOT_FOUND: account bob not found
            as user:u1 deposit t2 alice 10
              rejected PERMISSION_DENIED: a key bound to a user moves money only out of that user's accounts
            as user:u1 transfer t3 alice->bob 10
              post posted 1000
            transfer h1 bob->alice 5 hold
              hold pending 500
            as user:u1 void v1 h1
              rejected PENDING_NOT_FOUND: no hold with id 0000000000000000000000000C
            as user:u2 void v1 h1
              void voided 500
            as user:u1 transfer d2 alice->bob 100
              rejected IDEMPOTENCY_KEY_REUSED: idempotency key 'd2' was already used with other parameters
            as user:u1 linked l1 alice->bob 1; l2 bob->alice 1
              rejected LINKED_EVENT_FAILED: the transfer at index 1 of this linked request failed with ACCOUNT_NOT_FOUND
              rejected ACCOUNT_NOT_FOUND: account bob not found
            as client limit alice 500
              rejected PERMISSION_DENIED: only an admin key may change an account's status or limit
            as client freeze bob
              rejected PERMISSION_DENIED: only an admin key may change an account's status or limit
            as user:u1 user carol
              rejected PERMISSION_DENIED: a key bound to a user cannot create users
            as user:u1 order o1 u2 1.00
              rejected PERMISSION_DENIED: a key bound to a user orders only for that user
            as user:u1 order o1 u1 1.00
              created order o1 PENDING 100
            as client transfer t4 bob->alice 1
              post posted 100
            --
            alice USD posted=9100
            bob USD posted=10900
            mine USD posted=0
            plain USD posted=0
            world:USD USD posted=-20000
            events: AccountOpened AccountOpened AccountOpened TransferPosted TransferPosted AccountOpened AccountOpened TransferPosted HoldPlaced HoldVoided OrderCreated TransferPosted
        "#]],
    );
}

/// Issue 19, finding 8: an effective time lies between the Unix epoch and a day after the
/// commit time; outside it the request is bad input, refused and not recorded.
#[test]
fn effective_times_lie_in_a_window() {
    let mut script = Script::new();
    script.run_line("account a USD");
    script.run_line("account b USD limit=100000");
    let now = script.now.as_unix_micros();
    let day = 24 * 3_600 * 1_000_000;
    let cases = [
        ("year-1", Timestamp::parse_rfc3339("0001-01-01T00:00:00Z").expect("time"), false),
        ("before-epoch", Timestamp::from_unix_micros(-1), false),
        ("epoch", Timestamp::from_unix_micros(0), true),
        ("yesterday", Timestamp::from_unix_micros(now - day), true),
        ("next-hour", Timestamp::from_unix_micros(now + day / 24), true),
        ("next-week", Timestamp::from_unix_micros(now + 7 * day), false),
    ];
    for (key, at, accepted) in cases {
        let mut request = request(key, TransferKind::Transfer, id("b"), id("a"), 100, usd(), None);
        request.effective_at = Some(at);
        let batch = Batch {
            commands: vec![Command::new(
                Tenant::default_tenant(),
                Authority::Ledger,
                transfers(vec![request], Linking::Independent),
            )],
        };
        let outcome = script.ledger.execute(&batch, script.now, &mut script.ids);
        let result = match &outcome.results[0] {
            CommandResult::Transfers(results) => results[0].clone(),
            other => panic!("{other:?}"),
        };
        match result {
            TransferResult::Committed(transfer) if accepted => {
                assert_eq!(transfer.effective_at, at, "{key}");
            }
            TransferResult::Rejected(rejection) if !accepted => {
                assert_eq!(rejection.code, ErrorCode::InvalidArgument, "{key}");
            }
            other => panic!("{key}: {other:?}"),
        }
    }
}

/// Issue 19, finding 5: the prefixes of the accounts kopek derives are the server's. No
/// request opens `orders:` or `category:` accounts (not even an admin's), so one tenant cannot
/// take the shop or category account of another; `user:<id>:<CUR>` only as that user's own
/// account; `world:`, `fx:` and `fx-revenue:` only as the tenant's own system account.
#[test]
fn derived_account_prefixes_are_reserved_for_the_server() {
    check(
        "
        account orders:tc:USD USD system
        account orders:USD USD system
        account category:Gadgets:USD USD system
        account user:b42:USD USD owner=attacker
        account user:b42:USD USD owner=b42 limit=100
        account user:b42:USD USD
        account user:b42:USD USD owner=b42
        account world:acme:USD USD system
        account fx:EUR EUR
        account fx-revenue:USD USD system unbounded
        user bob b42
        ",
        expect![[r#"
            account orders:tc:USD USD system
              rejected INVALID_ARGUMENT: ids starting with 'orders:' are reserved for the accounts kopek opens itself
            account orders:USD USD system
              rejected INVALID_ARGUMENT: ids starting with 'orders:' are reserved for the accounts kopek opens itself
            account category:Gadgets:USD USD system
              rejected INVALID_ARGUMENT: ids starting with 'category:' are reserved for the accounts kopek opens itself
            account user:b42:USD USD owner=attacker
              rejected INVALID_ARGUMENT: ids starting with 'user:' are reserved for user:<id>:<CUR>, the account of user <id> (owned by that user, of kind user, without overdraft)
            account user:b42:USD USD owner=b42 limit=100
              rejected INVALID_ARGUMENT: ids starting with 'user:' are reserved for user:<id>:<CUR>, the account of user <id> (owned by that user, of kind user, without overdraft)
            account user:b42:USD USD
              rejected INVALID_ARGUMENT: ids starting with 'user:' are reserved for user:<id>:<CUR>, the account of user <id> (owned by that user, of kind user, without overdraft)
            account user:b42:USD USD owner=b42
              created user:b42:USD
            account world:acme:USD USD system
              rejected INVALID_ARGUMENT: ids starting with 'world:' are reserved for world:<CUR> system accounts
            account fx:EUR EUR
              rejected INVALID_ARGUMENT: ids starting with 'fx:' are reserved for fx:<CUR> system accounts
            account fx-revenue:USD USD system unbounded
              created fx-revenue:USD
            user bob b42
              created user b42 (bob) with user:b42:USD
            --
            fx-revenue:USD USD posted=0
            user:b42:USD USD posted=0
            events: AccountOpened AccountOpened UserCreated
        "#]],
    );
}

/// Issue 19, finding 5: ids belong to their tenant. Two tenants both open `alice`, both have a
/// user `u42` and both use the key `k1`; each moves only its own money, and neither sees the
/// other's `alice` as taken (keys show the tenant: `acme/alice`).
#[test]
fn two_tenants_have_the_same_ids_apart() {
    check(
        "
        account alice USD
        user Ann u42
        deposit k1 alice 10
        tenant acme
        account alice USD
        user Ann u42
        deposit k1 alice 3
        transfer t1 alice->user:u42:USD 1
        order o1 u42 1.00
        pay o1 u42 1.00
        tenant default
        transfer t1 alice->user:u42:USD 4
        ",
        expect![[r#"
            account alice USD
              created alice
            user Ann u42
              created user u42 (Ann) with user:u42:USD
            deposit k1 alice 10
              post posted 1000
            account alice USD
              created acme/alice
            user Ann u42
              created user acme/u42 (Ann) with acme/user:u42:USD
            deposit k1 alice 3
              post posted 300
            transfer t1 alice->user:u42:USD 1
              post posted 100
            order o1 u42 1.00
              created order acme/o1 PENDING 100
            pay o1 u42 1.00
              settled order acme/o1 PAID 100
            transfer t1 alice->user:u42:USD 4
              post posted 400
            --
            acme/alice USD posted=200
            acme/orders:acme:USD USD posted=100
            acme/user:u42:USD USD posted=0
            acme/world:acme:USD USD posted=-300
            alice USD posted=600
            user:u42:USD USD posted=400
            world:USD USD posted=-1000
            events: AccountOpened AccountOpened UserCreated AccountOpened TransferPosted AccountOpened AccountOpened UserCreated AccountOpened TransferPosted TransferPosted OrderCreated AccountOpened TransferPosted PaymentCompleted OrderPaid TransferPosted
        "#]],
    );
}
