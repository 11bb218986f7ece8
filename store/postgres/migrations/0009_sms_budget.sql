-- Hourly SMS send budgets (see verify.Config.HourlyBudget): one row per
-- budget scope ('global', 'country:44') and clock hour (hours since the
-- Unix epoch), counted up atomically by every replica. Rows older than the
-- previous hour are swept with expired verification sessions.
CREATE TABLE sms_budget (
    scope TEXT    NOT NULL CHECK (length(scope) BETWEEN 1 AND 16),
    hour  BIGINT  NOT NULL,
    sent  INTEGER NOT NULL CHECK (sent >= 0),
    PRIMARY KEY (scope, hour)
);
