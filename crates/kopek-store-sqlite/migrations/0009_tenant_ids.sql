-- Ids of accounts, users and orders belong to their tenant: outside the default tenant a
-- row's id is its key, `<tenant>/<id>`, so two tenants may both have an account `alice` or a
-- user `42`. The default tenant's ids do not change; a default-tenant reference that holds a
-- `/` (only ever in a declined transfer) is keyed `default/<id>`. Event subjects of accounts,
-- users and orders are kept as keys too; documents and names are unchanged.

UPDATE entries
SET account_id = (SELECT t.tenant FROM transfers t WHERE t.id = entries.transfer_id) || '/' || account_id
WHERE transfer_id IN (SELECT id FROM transfers WHERE tenant <> 'default');

UPDATE transfers
SET debit_account = CASE WHEN tenant = 'default' THEN 'default' ELSE tenant END || '/' || debit_account
WHERE debit_account IS NOT NULL AND (tenant <> 'default' OR debit_account LIKE '%/%');

UPDATE transfers
SET credit_account = CASE WHEN tenant = 'default' THEN 'default' ELSE tenant END || '/' || credit_account
WHERE credit_account IS NOT NULL AND (tenant <> 'default' OR credit_account LIKE '%/%');

UPDATE accounts SET id = tenant || '/' || id WHERE tenant <> 'default';

UPDATE users SET id = tenant || '/' || id WHERE tenant <> 'default';

UPDATE orders SET id = tenant || '/' || id, user_id = tenant || '/' || user_id
WHERE tenant <> 'default';

UPDATE outbox SET subject_id = tenant || '/' || subject_id
WHERE tenant <> 'default'
  AND kind IN ('AccountOpened', 'AccountUpdated', 'UserCreated', 'OrderCreated',
               'PaymentCompleted', 'PaymentFailed', 'OrderPaid', 'OrderFailed');
